//! Secrets Manager: the AUTH token kept as a secret, read and written. Errors name the secret, never
//! its value.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::Tag;

use super::{map_err, none_if_not_found};
use crate::cloud::{CloudError, CloudResult, STAGE_PENDING, SecretVersion};
use crate::secret::Secret;

pub(super) async fn get_secret(secrets: &Client, id: &str) -> CloudResult<Option<Secret>> {
    let out = secrets.get_secret_value().secret_id(id).send().await;
    let value = none_if_not_found(out.map_err(|e| map_err(e, "secret", id)))?;
    Ok(value.and_then(|v| v.secret_string().map(Secret::new)))
}

pub(super) async fn get_secret_version(
    secrets: &Client,
    id: &str,
    stage: &str,
) -> CloudResult<Option<SecretVersion>> {
    let out = secrets
        .get_secret_value()
        .secret_id(id)
        .version_stage(stage)
        .send()
        .await;
    // No version with that label answers ResourceNotFoundException, as a missing secret does.
    let value = none_if_not_found(out.map_err(|e| map_err(e, "secret", id)))?;
    Ok(value.and_then(|v| {
        Some(SecretVersion {
            version_id: v.version_id()?.to_string(),
            value: Secret::new(v.secret_string()?),
        })
    }))
}

pub(super) async fn put_secret_pending(
    secrets: &Client,
    id: &str,
    version_id: &str,
    value: &Secret,
) -> CloudResult<()> {
    secrets
        .put_secret_value()
        .secret_id(id)
        .client_request_token(version_id)
        .secret_string(value.expose())
        .version_stages(STAGE_PENDING)
        .send()
        .await
        .map_err(|e| map_err(e, "secret", id))?;
    Ok(())
}

pub(super) async fn move_secret_stage(
    secrets: &Client,
    id: &str,
    stage: &str,
    to: Option<&str>,
    from: Option<&str>,
) -> CloudResult<()> {
    secrets
        .update_secret_version_stage()
        .secret_id(id)
        .version_stage(stage)
        .set_move_to_version_id(to.map(str::to_string))
        .set_remove_from_version_id(from.map(str::to_string))
        .send()
        .await
        .map_err(|e| map_err(e, "secret", id))?;
    Ok(())
}

pub(super) async fn put_secret(
    secrets: &Client,
    id: &str,
    value: &Secret,
    tags: &BTreeMap<String, String>,
) -> CloudResult<()> {
    // A new version of an existing secret, else a new secret.
    let put = secrets
        .put_secret_value()
        .secret_id(id)
        .secret_string(value.expose())
        .send()
        .await;
    match put.map_err(|e| map_err(e, "secret", id)) {
        Ok(_) => Ok(()),
        Err(CloudError::NotFound { .. }) => {
            let tags = tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect();
            secrets
                .create_secret()
                .name(id)
                .description("ElastiCache AUTH token written by ecmigrate")
                .secret_string(value.expose())
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(|e| map_err(e, "secret", id))?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}
