//! KMS: the customer managed keys the wizard offers and the key a plan names, as `cloud::KmsKey`.

use aws_sdk_kms::Client;

use super::{map_err, none_if_not_found};
use crate::cloud::{CloudResult, KmsKey};

pub(super) async fn list_keys(kms: &Client) -> CloudResult<Vec<KmsKey>> {
    let mut names = Vec::new();
    let mut pages = kms.list_aliases().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| map_err(e, "KMS aliases", "*"))?;
        names.extend(
            page.aliases()
                .iter()
                .filter(|a| a.target_key_id().is_some())
                .filter_map(|a| a.alias_name().map(str::to_string))
                .filter(|n| !n.starts_with("alias/aws/")),
        );
    }
    let mut keys = Vec::new();
    for name in names {
        if let Some(k) = describe_key(kms, &name).await? {
            keys.push(k);
        }
    }
    Ok(keys)
}

/// GetKeyRotationStatus: whether automatic rotation is on (the key id or ARN; KMS refuses an alias here).
pub(super) async fn key_rotation_enabled(kms: &Client, key: &str) -> CloudResult<bool> {
    let out = kms
        .get_key_rotation_status()
        .key_id(key)
        .send()
        .await
        .map_err(|e| map_err(e, "KMS key rotation status", key))?;
    Ok(out.key_rotation_enabled())
}

pub(super) async fn describe_key(kms: &Client, key_id: &str) -> CloudResult<Option<KmsKey>> {
    let out = match kms.describe_key().key_id(key_id).send().await {
        Ok(out) => out,
        Err(e) => {
            return none_if_not_found(Err(map_err(e, "KMS key", key_id)));
        }
    };
    let Some(meta) = out.key_metadata() else {
        return Ok(None);
    };
    let id = meta.key_id().to_string();
    // Aliases are informative only: best-effort.
    let aliases = match kms.list_aliases().key_id(&id).send().await {
        Ok(a) => a
            .aliases()
            .iter()
            .filter_map(|a| a.alias_name().map(str::to_string))
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(Some(KmsKey {
        arn: meta.arn().map(str::to_string).unwrap_or_else(|| id.clone()),
        key_id: id,
        key_state: meta
            .key_state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "Unknown".into()),
        key_spec: meta
            .key_spec()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into()),
        key_usage: meta
            .key_usage()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "ENCRYPT_DECRYPT".into()),
        aliases,
    }))
}
