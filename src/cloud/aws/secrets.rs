//! Secrets Manager: the AUTH token kept as a secret, read and written. Errors name the secret, never
//! its value.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::Tag;

use super::{map_err, none_if_not_found};
use crate::cloud::{CloudError, CloudResult};
use crate::secret::Secret;

pub(super) async fn get_secret(secrets: &Client, id: &str) -> CloudResult<Option<Secret>> {
    let out = secrets.get_secret_value().secret_id(id).send().await;
    let value = none_if_not_found(out.map_err(|e| map_err(e, "secret", id)))?;
    Ok(value.and_then(|v| v.secret_string().map(Secret::new)))
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
