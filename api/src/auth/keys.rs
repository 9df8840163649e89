//! The keys file: a JSON list of `{"kid", "secret"[, "verify_until"]}`, the first key signing
//! and every key verifying. A secret is at least [`MIN_SECRET_BYTES`]; the key is SHA-256 of a
//! fixed label and the secret, so the file holds text that is easy to generate and paste.

use std::path::Path;

use chrono::{DateTime, Utc};
use pasetors::keys::SymmetricKey;
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::version4::V4;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuthError;
use super::claims::Grant;

/// The shortest accepted secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// One entry of the keys file.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyEntry {
    pub kid: String,
    pub secret: String,
    /// After this instant the key verifies nothing (the end of a rotation window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("secret", &"***")
            .field("verify_until", &self.verify_until)
            .finish()
    }
}

/// One key of the file, ready to mint and verify (`token.rs`).
pub(super) struct TokenKey {
    pub(super) kid: String,
    pub(super) key: SymmetricKey<V4>,
    /// The key's PASERK id, as tokens carry it in their footer.
    pub(super) lid: String,
    pub(super) verify_until: Option<DateTime<Utc>>,
}

/// The signing key (first) and every key that verifies.
pub struct TokenKeys {
    pub(super) keys: Vec<TokenKey>,
    /// Tokens verified already, by their text (a token always decodes to the same grant):
    /// decrypting and parsing the claims costs ~30 us, a lookup well under 1 us. Expiry is
    /// checked on every use; the cache is emptied when full.
    pub(super) verified: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("TokenKeys").field("kids", &kids).finish()
    }
}

fn derive_key(secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lite-gallery token key v1\n");
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Secrets that are published somewhere (examples, defaults) and so protect nothing.
pub fn is_known_secret(secret: &str) -> bool {
    let lower = secret.to_ascii_lowercase();
    lower.contains("change-me")
        || lower.contains("changeme")
        || lower.contains("example")
        || secret.bytes().all(|b| b == secret.as_bytes()[0])
}

impl TokenKeys {
    pub fn from_entries(entries: Vec<KeyEntry>) -> Result<Self, AuthError> {
        if entries.is_empty() {
            return Err(AuthError::Keys("the keys file lists no key".into()));
        }
        let mut keys = Vec::with_capacity(entries.len());
        for e in entries {
            if e.kid.trim().is_empty() {
                return Err(AuthError::Keys("a key has an empty kid".into()));
            }
            if e.secret.len() < MIN_SECRET_BYTES || is_known_secret(&e.secret) {
                return Err(AuthError::Keys(format!(
                    "key {:?}: the secret must be at least {MIN_SECRET_BYTES} random bytes \
                     (e.g. `openssl rand -hex 32`), not a published example",
                    e.kid
                )));
            }
            if keys.iter().any(|k: &TokenKey| k.kid == e.kid) {
                return Err(AuthError::Keys(format!("kid {:?} appears twice", e.kid)));
            }
            let key = SymmetricKey::<V4>::from(&derive_key(&e.secret))
                .map_err(|e| AuthError::Keys(e.to_string()))?;
            let mut lid = String::new();
            Id::from(&key)
                .fmt(&mut lid)
                .map_err(|e| AuthError::Keys(e.to_string()))?;
            keys.push(TokenKey {
                kid: e.kid,
                key,
                lid,
                verify_until: e.verify_until,
            });
        }
        Ok(Self {
            keys,
            verified: Default::default(),
        })
    }

    pub fn from_json(text: &str) -> Result<Self, AuthError> {
        let entries: Vec<KeyEntry> = serde_json::from_str(text).map_err(|e| {
            AuthError::Keys(format!(
                "expected a JSON list of {{\"kid\", \"secret\"}}: {e}"
            ))
        })?;
        Self::from_entries(entries)
    }

    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Keys(format!("reading {}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    /// A new keys file with one random key (mode 0600), unless one exists; then loads it.
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        if !path.exists() {
            let secret: [u8; 32] = rand::random();
            let entries = vec![KeyEntry {
                // The date says when, the random part keeps two keys made the same day apart.
                kid: format!(
                    "k{}-{}",
                    Utc::now().format("%Y%m%d"),
                    hex::encode(rand::random::<[u8; 4]>())
                ),
                secret: hex::encode(secret),
                verify_until: None,
            }];
            let text = serde_json::to_string_pretty(&entries).expect("plain JSON");
            gallery_nats::write_private(path, text.as_bytes())
                .map_err(|e| AuthError::Keys(format!("writing {}: {e}", path.display())))?;
        }
        Self::load(path)
    }

    /// The kid of the signing key.
    pub fn signing_kid(&self) -> &str {
        &self.keys[0].kid
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Keys from `(kid, secret)` pairs, none retiring.
    pub(in crate::auth) fn keys(entries: &[(&str, &str)]) -> TokenKeys {
        TokenKeys::from_entries(
            entries
                .iter()
                .map(|(kid, secret)| KeyEntry {
                    kid: (*kid).into(),
                    secret: (*secret).into(),
                    verify_until: None,
                })
                .collect(),
        )
        .unwrap()
    }

    pub(in crate::auth) const S1: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978";
    pub(in crate::auth) const S2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";

    #[test]
    fn weak_duplicate_and_missing_keys_are_refused() {
        let weak = |secret: &str| {
            TokenKeys::from_entries(vec![KeyEntry {
                kid: "k".into(),
                secret: secret.into(),
                verify_until: None,
            }])
            .is_err()
        };
        assert!(weak("short"));
        assert!(weak(&"x".repeat(64)));
        assert!(weak("change-me-change-me-change-me-change-me"));
        assert!(!weak(S1));
        assert!(TokenKeys::from_json("[]").is_err());
        assert!(TokenKeys::from_json("{}").is_err());
        let dup = format!(r#"[{{"kid":"a","secret":"{S1}"}},{{"kid":"a","secret":"{S2}"}}]"#);
        assert!(TokenKeys::from_json(&dup).is_err());
    }
}
