//! AUTH tokens: a wrapper that never prints its value, generation, and the stores a token is kept in.
//!
//! The state file and every output name the store (`file:/path`, `env:NAME`), never the token.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A secret string. `Debug` and `Display` print `<redacted>`; only `expose()` gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Characters a generated token draws from: ASCII letters, digits and the special characters the AUTH
/// rule permits (`crate::plan::rules::AUTH_TOKEN_SPECIALS`), so AWS takes every generated token.
const TOKEN_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!&#$^<>-";

const TOKEN_LEN: usize = 64;

/// A fresh 64-character token from the system's CSPRNG.
pub fn generate_token() -> Secret {
    // Bytes at or above the largest multiple of the alphabet's size are dropped, so every character is
    // equally likely (a plain `% len` would favour the first 256 % len characters).
    let bound = 256 - 256 % TOKEN_ALPHABET.len();
    let mut token = String::with_capacity(TOKEN_LEN);
    let mut bytes = [0u8; TOKEN_LEN];
    while token.len() < TOKEN_LEN {
        aws_lc_rs::rand::fill(&mut bytes).expect("system random source");
        let fair = bytes.iter().filter(|b| usize::from(**b) < bound);
        for b in fair.take(TOKEN_LEN - token.len()) {
            token.push(TOKEN_ALPHABET[usize::from(*b) % TOKEN_ALPHABET.len()] as char);
        }
    }
    Secret(token)
}

const CLOUD_STORE: &str = "internal: a Secrets Manager token is read and written through the cloud";

/// Where a token is kept. Its `Display` is the reference the state file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStore {
    File(PathBuf),
    Env(String),
    /// A Secrets Manager secret (name or ARN): read and written through the cloud, not here.
    SecretsManager(String),
}

impl fmt::Display for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenStore::File(p) => write!(f, "file:{}", p.display()),
            TokenStore::Env(name) => write!(f, "env:{name}"),
            TokenStore::SecretsManager(id) => write!(f, "secretsmanager:{id}"),
        }
    }
}

impl TokenStore {
    /// The stored token, `Ok(None)` when the store is empty (no file, unset variable).
    pub fn load(&self) -> Result<Option<Secret>, String> {
        match self {
            TokenStore::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(Some(Secret(
                    text.trim_end_matches(['\n', '\r']).to_string(),
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("cannot read token file {}: {e}", path.display())),
            },
            TokenStore::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
                _ => Ok(None),
            },
            TokenStore::SecretsManager(_) => Err(CLOUD_STORE.into()),
        }
    }

    /// A token file must be readable by its owner only (as ssh wants of a private key), and its folder
    /// writable by no one else (who could swap the file): the problem and the `chmod` that fixes it.
    /// Stores other than a file, and a file that does not exist yet, have nothing to check.
    pub fn check_permissions(&self) -> Result<(), (String, String)> {
        use std::os::unix::fs::PermissionsExt;
        let TokenStore::File(path) = self else {
            return Ok(());
        };
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(meta) = std::fs::metadata(parent) {
            let mode = meta.permissions().mode() & 0o7777;
            // World-writable without the sticky bit: anyone may replace the token file.
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                return Err((
                    format!(
                        "the folder {} of the token file is writable by everyone (mode {mode:04o})",
                        parent.display()
                    ),
                    format!("chmod o-w {}", parent.display()),
                ));
            }
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => return Ok(()),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err((
                format!(
                    "the token file {} can be read by others (mode {mode:04o}; it must be 0600)",
                    path.display()
                ),
                format!("chmod 600 {}", path.display()),
            ));
        }
        Ok(())
    }

    /// Whether `save` would succeed, without writing anything.
    pub fn check_writable(&self) -> Result<(), String> {
        match self {
            TokenStore::File(path) => {
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let mut dir = parent;
                // The folder may not exist yet; the nearest existing ancestor must be writable.
                while !dir.exists() {
                    match dir.parent() {
                        Some(p) if !p.as_os_str().is_empty() => dir = p,
                        _ => {
                            dir = Path::new(".");
                            break;
                        }
                    }
                }
                let meta = std::fs::metadata(dir)
                    .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
                if !meta.is_dir() {
                    return Err(format!("{} is not a folder", dir.display()));
                }
                if meta.permissions().readonly() {
                    return Err(format!("{} is not writable", dir.display()));
                }
                Ok(())
            }
            TokenStore::Env(name) => Err(format!(
                "an environment variable ({name}) cannot receive a generated token; use `file:`"
            )),
            // Whether the secret can be written is only known by writing it; preflight checks the
            // service answers.
            TokenStore::SecretsManager(_) => Ok(()),
        }
    }

    /// Keep `token` in the store: a file is written atomically with mode 0600.
    pub fn save(&self, token: &Secret) -> Result<(), String> {
        match self {
            TokenStore::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
                }
                let tmp = path.with_extension("tmp-ecmigrate");
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
                file.write_all(token.expose().as_bytes())
                    .and_then(|_| file.write_all(b"\n"))
                    .and_then(|_| file.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, path)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(())
            }
            TokenStore::Env(_) => self.check_writable(),
            TokenStore::SecretsManager(_) => Err(CLOUD_STORE.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("super-secret-token-value");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
    }

    #[test]
    fn generated_tokens_follow_the_auth_rules() {
        for _ in 0..1000 {
            let t = generate_token();
            assert_eq!(t.expose().len(), TOKEN_LEN);
            crate::plan::rules::check_auth_token(t.expose()).unwrap();
        }
        assert_ne!(generate_token(), generate_token());
    }

    #[test]
    fn the_alphabet_is_letters_digits_and_the_permitted_specials() {
        let specials: String = TOKEN_ALPHABET
            .iter()
            .map(|b| *b as char)
            .filter(|c| !c.is_ascii_alphanumeric())
            .collect();
        assert_eq!(specials, crate::plan::rules::AUTH_TOKEN_SPECIALS);
        assert_eq!(TOKEN_ALPHABET.len(), 26 + 26 + 10 + specials.len());
    }

    #[test]
    fn every_alphabet_character_turns_up() {
        // 70 characters over 64 000 draws: a missing one would mean a broken mapping, not bad luck.
        let seen: std::collections::BTreeSet<char> = (0..1000)
            .flat_map(|_| generate_token().expose().chars().collect::<Vec<_>>())
            .collect();
        assert_eq!(seen.len(), TOKEN_ALPHABET.len());
    }
}
