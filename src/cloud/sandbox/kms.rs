//! Sandbox KMS: symmetric keys kept in the registry, and sealing of snapshot files (envelope encryption:
//! AES-256-GCM under a fresh data key, the data key wrapped by the KMS key).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::registry::{KeyRec, Registry};
use crate::cloud::{CloudError, CloudResult, KmsKey};

pub const DEFAULT_KEY_ALIAS: &str = "alias/aws/elasticache";
const ARN_PREFIX: &str = "arn:aws:kms:sandbox:000000000000:";
const SEAL_MAGIC: &[u8] = b"ECMSEAL1\n";

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> CloudResult<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return Err(CloudError::other("sandbox: bad hex"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| CloudError::other("sandbox: bad hex"))
        })
        .collect()
}

pub fn random<const N: usize>() -> CloudResult<[u8; N]> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out)
        .map_err(|_| CloudError::other("sandbox: system random source failed"))?;
    Ok(out)
}

/// `alias/NAME` for a bare name; an alias given with its prefix is kept.
pub fn alias_name(alias: &str) -> String {
    if alias.starts_with("alias/") {
        alias.to_string()
    } else {
        format!("alias/{alias}")
    }
}

pub fn to_kms_key(rec: &KeyRec) -> KmsKey {
    KmsKey {
        key_id: rec.id.clone(),
        arn: rec.arn.clone(),
        key_state: if rec.enabled { "Enabled" } else { "Disabled" }.to_string(),
        key_spec: "SYMMETRIC_DEFAULT".to_string(),
        key_usage: "ENCRYPT_DECRYPT".to_string(),
        aliases: rec.aliases.clone(),
    }
}

/// The key `key_ref` names: an id, a key ARN, `alias/NAME` or an alias ARN.
pub fn find<'a>(registry: &'a Registry, key_ref: &str) -> Option<&'a KeyRec> {
    let key_ref = key_ref.strip_prefix(ARN_PREFIX).unwrap_or(key_ref);
    let key_ref = key_ref.strip_prefix("key/").unwrap_or(key_ref);
    registry
        .kms_keys
        .values()
        .find(|k| k.id == key_ref || k.aliases.iter().any(|a| a == key_ref))
}

/// Id of the key `key_ref` names, creating the default key on first use.
pub fn resolve_or_default(registry: &mut Registry, key_ref: &str) -> CloudResult<Option<String>> {
    if let Some(k) = find(registry, key_ref) {
        return Ok(Some(k.id.clone()));
    }
    let bare = key_ref.strip_prefix(ARN_PREFIX).unwrap_or(key_ref);
    if bare == DEFAULT_KEY_ALIAS {
        return create(registry, DEFAULT_KEY_ALIAS).map(|k| Some(k.id));
    }
    Ok(None)
}

pub fn create(registry: &mut Registry, alias: &str) -> CloudResult<KeyRec> {
    let alias = alias_name(alias);
    let name = &alias["alias/".len()..];
    if name.is_empty()
        || name.len() > 250
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
    {
        return Err(CloudError::invalid(format!(
            "`{alias}` is not a valid KMS alias (letters, digits, `/`, `_` and `-` only)"
        )));
    }
    if find(registry, &alias).is_some() {
        return Err(CloudError::AlreadyExists {
            what: "KMS alias",
            id: alias,
        });
    }
    let b = random::<16>()?;
    let h = hex(&b);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    let rec = KeyRec {
        arn: format!("{ARN_PREFIX}key/{id}"),
        id: id.clone(),
        aliases: vec![alias],
        enabled: true,
        material_hex: hex(&random::<32>()?),
        created_at: Utc::now(),
    };
    registry.kms_keys.insert(id, rec.clone());
    Ok(rec)
}

/// The key, which must exist and be Enabled, for `purpose`.
pub fn usable<'a>(registry: &'a Registry, key_ref: &str, purpose: &str) -> CloudResult<&'a KeyRec> {
    let key = find(registry, key_ref).ok_or_else(|| {
        CloudError::invalid(format!("KMS key `{key_ref}` does not exist ({purpose})"))
    })?;
    if !key.enabled {
        return Err(CloudError::invalid(format!(
            "KMS key `{key_ref}` ({}) is Disabled; it must be Enabled to {purpose}",
            key.id
        )));
    }
    Ok(key)
}

#[derive(Serialize, Deserialize)]
struct SealHeader {
    key_id: String,
    wrapped_key: String,
    key_nonce: String,
    data_nonce: String,
}

fn aead_key(material: &[u8]) -> CloudResult<LessSafeKey> {
    let unbound = UnboundKey::new(&AES_256_GCM, material)
        .map_err(|_| CloudError::other("sandbox: bad AES-256 key material"))?;
    Ok(LessSafeKey::new(unbound))
}

fn seal_bytes(
    key: &[u8],
    aad: &[u8],
    mut data: Vec<u8>,
) -> CloudResult<(Vec<u8>, [u8; NONCE_LEN])> {
    let nonce = random::<NONCE_LEN>()?;
    aead_key(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut data,
        )
        .map_err(|_| CloudError::other("sandbox: encryption failed"))?;
    Ok((data, nonce))
}

fn open_bytes(key: &[u8], aad: &[u8], nonce: &[u8], mut data: Vec<u8>) -> CloudResult<Vec<u8>> {
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| CloudError::other("sandbox: bad nonce in a sealed file"))?;
    let plain_len = aead_key(key)?
        .open_in_place(nonce, Aad::from(aad), &mut data)
        .map_err(|_| {
            CloudError::other(
                "sandbox: a sealed file failed authentication (wrong key or tampered)",
            )
        })?
        .len();
    data.truncate(plain_len);
    Ok(data)
}

/// Seal `plain` under `key`: `ECMSEAL1\n`, one JSON header line (key id, wrapped data key, nonces), then
/// the AES-256-GCM ciphertext and tag.
pub fn seal(key: &KeyRec, plain: Vec<u8>) -> CloudResult<Vec<u8>> {
    let data_key = random::<32>()?;
    let material = unhex(&key.material_hex)?;
    let (wrapped, key_nonce) = seal_bytes(&material, key.id.as_bytes(), data_key.to_vec())?;
    let (cipher, data_nonce) = seal_bytes(&data_key, key.id.as_bytes(), plain)?;
    let header = SealHeader {
        key_id: key.id.clone(),
        wrapped_key: hex(&wrapped),
        key_nonce: hex(&key_nonce),
        data_nonce: hex(&data_nonce),
    };
    let mut out = SEAL_MAGIC.to_vec();
    out.extend(serde_json::to_vec(&header).map_err(|e| CloudError::other(e.to_string()))?);
    out.push(b'\n');
    out.extend(cipher);
    Ok(out)
}

fn parse(sealed: &[u8]) -> CloudResult<(SealHeader, &[u8])> {
    let bad = || CloudError::other("sandbox: not a sealed snapshot file");
    let rest = sealed.strip_prefix(SEAL_MAGIC).ok_or_else(bad)?;
    let end = rest.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
    let header: SealHeader = serde_json::from_slice(&rest[..end]).map_err(|_| bad())?;
    Ok((header, &rest[end + 1..]))
}

/// Open a sealed file with `key` (the caller checks that the key is Enabled).
pub fn unseal(key: &KeyRec, sealed: &[u8]) -> CloudResult<Vec<u8>> {
    let (header, cipher) = parse(sealed)?;
    if header.key_id != key.id {
        return Err(CloudError::other(format!(
            "sandbox: the sealed file is for key {}, not {}",
            header.key_id, key.id
        )));
    }
    let material = unhex(&key.material_hex)?;
    let data_key = open_bytes(
        &material,
        key.id.as_bytes(),
        &unhex(&header.key_nonce)?,
        unhex(&header.wrapped_key)?,
    )?;
    open_bytes(
        &data_key,
        key.id.as_bytes(),
        &unhex(&header.data_nonce)?,
        cipher.to_vec(),
    )
}
