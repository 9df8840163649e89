//! Project-scoped bearer tokens (docs/ARCHITECTURE.md §11): pure logic, no HTTP.
//!
//! A token names a project scope (one id, or a prefix ending in `*`; `*` alone is every
//! project), a set of [`Right`]s and an expiry. The format is PASETO `v4.local` (the
//! `pasetors` crate): authenticated encryption with a 32-byte symmetric key, no algorithm field
//! to negotiate (the class of JWT bugs where a token picks its own algorithm can't happen), and
//! the claims are unreadable to whoever holds the token, so logs and proxies learn nothing from
//! it. The footer carries the key's PASERK id (`k4.lid.…`), which picks the key: rotating
//! means adding a new key first in the keys file and keeping the old one after it (optionally
//! with `verify_until`) until its tokens have expired.
//!
//! Keys come from a JSON file, a list of `{"kid", "secret"[, "verify_until"]}`; the first key
//! signs, every key verifies. A secret is at least 32 bytes; the key is SHA-256 of a fixed label
//! and the secret, so the file holds text that is easy to generate and paste.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gallery_schema::ProjectId;
use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::footer::Footer;
use pasetors::keys::SymmetricKey;
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Local, local};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bound into every token (PASETO's implicit assertion): a token made for something else with
/// the same key never verifies here.
const IMPLICIT: &[u8] = b"lite-gallery project token v1";
/// The shortest accepted secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// The longest token lifetime `gallery token` and `POST /tokens` hand out.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Ask for upload links, confirm uploads, reprocess.
    Upload,
    /// List images and read one (including the original's link).
    Read,
    /// The project's WebSocket.
    Subscribe,
    /// Mint tokens for projects inside the scope.
    Admin,
}

impl Right {
    pub const ALL: [Right; 4] = [Self::Upload, Self::Read, Self::Subscribe, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Read => "read",
            Self::Subscribe => "subscribe",
            Self::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights(u8);

impl Rights {
    /// `upload,read,subscribe,admin` (any order, any subset, at least one).
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        let mut rights = Rights::default();
        for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let right = Right::ALL
                .into_iter()
                .find(|r| r.as_str() == name)
                .ok_or_else(|| {
                    AuthError::Invalid(format!(
                        "unknown right {name:?}; use upload, read, subscribe or admin"
                    ))
                })?;
            rights.0 |= right.bit();
        }
        if rights.0 == 0 {
            return Err(AuthError::Invalid("name at least one right".into()));
        }
        Ok(rights)
    }

    pub fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    pub fn covers(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn names(self) -> Vec<&'static str> {
        Right::ALL
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(Right::as_str)
            .collect()
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// The projects a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Project(ProjectId),
    /// Every project whose id starts with this (`""`: every project).
    Prefix(String),
}

impl Scope {
    /// A project id, or a prefix of ids followed by `*` (`*` alone: every project).
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        match raw.strip_suffix('*') {
            Some(prefix) => {
                // A prefix is a project id cut short: the same characters, never a wildcard.
                if !prefix.is_empty() && ProjectId::parse(prefix).is_err() {
                    return Err(AuthError::Invalid(format!(
                        "{raw:?} is not a project id or a prefix of ids followed by *"
                    )));
                }
                Ok(Self::Prefix(prefix.to_owned()))
            }
            None => ProjectId::parse(raw)
                .map(Self::Project)
                .map_err(|_| AuthError::Invalid(format!("{raw:?} is not a project id"))),
        }
    }

    pub fn covers(&self, project: &ProjectId) -> bool {
        match self {
            Self::Project(p) => p == project,
            Self::Prefix(prefix) => project.as_str().starts_with(prefix.as_str()),
        }
    }

    /// Whether every project `other` names is in this scope (for minting narrower tokens).
    pub fn covers_scope(&self, other: &Scope) -> bool {
        match (self, other) {
            (_, Self::Project(p)) => self.covers(p),
            (Self::Prefix(mine), Self::Prefix(theirs)) => theirs.starts_with(mine.as_str()),
            (Self::Project(_), Self::Prefix(_)) => false,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Project(p) => write!(f, "{p}"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scope: Scope,
    pub rights: Rights,
    pub expires_at: DateTime<Utc>,
    /// The `kid` of the key that verified it (for logs).
    pub kid: String,
    /// The end of that key's rotation window, if it is retiring: the grant ends there too.
    pub key_until: Option<DateTime<Utc>>,
}

impl Grant {
    /// When this grant stops allowing anything: its expiry, or its key's retirement if sooner.
    pub fn valid_until(&self) -> DateTime<Utc> {
        match self.key_until {
            Some(until) => self.expires_at.min(until),
            None => self.expires_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a token of ours, signed with no key we have, tampered with, or expired. One message
    /// for all: a client learns nothing about which check failed.
    #[error("the token is not valid (expired, revoked or not ours)")]
    BadToken,
    #[error("{0}")]
    Invalid(String),
    #[error("token keys: {0}")]
    Keys(String),
}

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

struct TokenKey {
    kid: String,
    key: SymmetricKey<V4>,
    /// The key's PASERK id, as tokens carry it in their footer.
    lid: String,
    verify_until: Option<DateTime<Utc>>,
}

/// The signing key (first) and every key that verifies.
pub struct TokenKeys {
    keys: Vec<TokenKey>,
    /// Tokens verified already, by their text (a token always decodes to the same grant):
    /// decrypting and parsing the claims costs ~30 us, a lookup well under 1 us. Expiry is
    /// checked on every use; the cache is emptied when full.
    verified: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
}

/// Verified tokens kept at most.
const VERIFIED_CACHE: usize = 10_000;

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
                kid: format!("k{}", Utc::now().format("%Y%m%d")),
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

    /// A token for `scope` with `rights`, valid until `expires_at`, signed with the first key.
    pub fn mint(
        &self,
        scope: &Scope,
        rights: Rights,
        expires_at: DateTime<Utc>,
    ) -> Result<String, AuthError> {
        let signer = &self.keys[0];
        let err = |e: pasetors::errors::Error| AuthError::Invalid(format!("minting: {e}"));
        let mut claims = Claims::new().map_err(err)?;
        claims
            .expiration(&expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .map_err(err)?;
        claims
            .add_additional("prj", scope.to_string())
            .map_err(err)?;
        claims
            .add_additional("rights", rights.to_string())
            .map_err(err)?;
        let mut footer = Footer::new();
        footer.key_id(&Id::from(&signer.key));
        local::encrypt(&signer.key, &claims, Some(&footer), Some(IMPLICIT)).map_err(err)
    }

    /// Checks a token: a key of ours (by the footer's id) decrypts it, it has not expired, and
    /// its claims parse. `now` is only used for a key's `verify_until`; expiry is checked
    /// against the system clock by the crate.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Grant, AuthError> {
        if token.len() > 4096 {
            return Err(AuthError::BadToken);
        }
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        if let Some(grant) = cached {
            // The crate checked expiry against the system clock when it first verified; from
            // the cache, the grant's own end (expiry or key retirement) decides.
            return if now < grant.valid_until() {
                Ok(grant)
            } else {
                Err(AuthError::BadToken)
            };
        }
        let grant = self.verify_uncached(token, now)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(token.to_owned(), grant.clone());
        Ok(grant)
    }

    fn verify_uncached(&self, token: &str, now: DateTime<Utc>) -> Result<Grant, AuthError> {
        let untrusted =
            UntrustedToken::<Local, V4>::try_from(token).map_err(|_| AuthError::BadToken)?;
        let mut footer = Footer::new();
        footer
            .parse_bytes(untrusted.untrusted_footer())
            .map_err(|_| AuthError::BadToken)?;
        let lid = footer
            .get_claim("kid")
            .and_then(|v| v.as_str())
            .ok_or(AuthError::BadToken)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.lid == lid)
            .ok_or(AuthError::BadToken)?;
        if key.verify_until.is_some_and(|until| now > until) {
            return Err(AuthError::BadToken);
        }
        let rules = ClaimsValidationRules::new();
        let trusted = local::decrypt(&key.key, &untrusted, &rules, None, Some(IMPLICIT))
            .map_err(|_| AuthError::BadToken)?;
        let claims = trusted.payload_claims().ok_or(AuthError::BadToken)?;
        let text = |name: &str| {
            claims
                .get_claim(name)
                .and_then(|v| v.as_str())
                .ok_or(AuthError::BadToken)
        };
        let scope = Scope::parse(text("prj")?).map_err(|_| AuthError::BadToken)?;
        let rights = Rights::parse(text("rights")?).map_err(|_| AuthError::BadToken)?;
        let expires_at = DateTime::parse_from_rfc3339(text("exp")?)
            .map_err(|_| AuthError::BadToken)?
            .with_timezone(&Utc);
        Ok(Grant {
            scope,
            rights,
            expires_at,
            kid: key.kid.clone(),
            key_until: key.verify_until,
        })
    }
}

/// `--auth` and `--rate-limits`: on, off, or `auto`, which is on unless the api listens on
/// loopback only (a developer's `gallery up`, or local benchmarks from one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Auto,
    On,
    Off,
}

impl std::str::FromStr for Switch {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" | "true" => Ok(Self::On),
            "off" | "false" => Ok(Self::Off),
            other => Err(format!("{other:?}: use auto, on or off")),
        }
    }
}

impl Switch {
    /// `auto` is on unless the api both listens on loopback and is published under a loopback
    /// URL: a reverse proxy forwarding from the internet to 127.0.0.1 (its public URL names the
    /// outside host) turns it on.
    pub fn resolve(self, listen: std::net::SocketAddr, public_url: &str) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => !listen.ip().is_loopback() || !is_loopback_url(public_url),
        }
    }
}

/// Whether a URL's host is a loopback name or address.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &[(&str, &str)]) -> TokenKeys {
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

    const S1: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978";
    const S2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";

    fn p(id: &str) -> ProjectId {
        ProjectId::parse(id).unwrap()
    }

    fn in_an_hour() -> DateTime<Utc> {
        Utc::now() + chrono::TimeDelta::hours(1)
    }

    #[test]
    fn a_minted_token_verifies_with_its_scope_and_rights() {
        let k = keys(&[("k1", S1)]);
        let rights = Rights::parse("read,subscribe").unwrap();
        let token = k
            .mint(&Scope::parse("42").unwrap(), rights, in_an_hour())
            .unwrap();
        assert!(token.starts_with("v4.local."));
        let grant = k.verify(&token, Utc::now()).unwrap();
        assert_eq!(grant.scope, Scope::Project(p("42")));
        assert!(grant.rights.contains(Right::Read) && !grant.rights.contains(Right::Upload));
        assert_eq!(grant.kid, "k1");
        // Every token is unreadable and fresh, even for the same claims.
        assert_ne!(
            token,
            k.mint(&Scope::parse("42").unwrap(), rights, in_an_hour())
                .unwrap()
        );
        // The claims are encrypted: neither the token nor its decoded body shows them.
        let secret_name = "project-with-a-telling-name";
        let named = k
            .mint(&Scope::parse(secret_name).unwrap(), rights, in_an_hour())
            .unwrap();
        let body = named
            .trim_start_matches("v4.local.")
            .split('.')
            .next()
            .unwrap();
        use base64::Engine;
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        for shown in [secret_name.as_bytes(), b"subscribe", b"rights"] {
            assert!(!decoded.windows(shown.len()).any(|w| w == shown));
            assert!(!named.as_bytes().windows(shown.len()).any(|w| w == shown));
        }
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_are_refused() {
        let k = keys(&[("k1", S1)]);
        let all = Rights::parse("upload,read,subscribe,admin").unwrap();
        let scope = Scope::parse("*").unwrap();
        let expired = k
            .mint(&scope, all, Utc::now() - chrono::TimeDelta::seconds(5))
            .unwrap();
        assert_eq!(k.verify(&expired, Utc::now()), Err(AuthError::BadToken));
        let other = keys(&[("k1", S2)]);
        let foreign = other.mint(&scope, all, in_an_hour()).unwrap();
        assert_eq!(k.verify(&foreign, Utc::now()), Err(AuthError::BadToken));
        let good = k.mint(&scope, all, in_an_hour()).unwrap();
        let mut tampered = good.clone().into_bytes();
        let n = tampered.len() / 2;
        tampered[n] = if tampered[n] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(k.verify(&tampered, Utc::now()), Err(AuthError::BadToken));
        for junk in [
            "",
            "v4.local.",
            "Bearer x",
            "v2.local.abc",
            &"a".repeat(10_000),
        ] {
            assert_eq!(
                k.verify(junk, Utc::now()),
                Err(AuthError::BadToken),
                "{junk}"
            );
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_the_old_key_retires() {
        let old = keys(&[("old", S1)]);
        let scope = Scope::parse("p1").unwrap();
        let rights = Rights::parse("read").unwrap();
        let old_token = old.mint(&scope, rights, in_an_hour()).unwrap();
        let retire = Utc::now() + chrono::TimeDelta::minutes(10);
        let rotated = TokenKeys::from_entries(vec![
            KeyEntry {
                kid: "new".into(),
                secret: S2.into(),
                verify_until: None,
            },
            KeyEntry {
                kid: "old".into(),
                secret: S1.into(),
                verify_until: Some(retire),
            },
        ])
        .unwrap();
        assert_eq!(rotated.signing_kid(), "new");
        assert_eq!(rotated.verify(&old_token, Utc::now()).unwrap().kid, "old");
        let new_token = rotated.mint(&scope, rights, in_an_hour()).unwrap();
        assert_eq!(rotated.verify(&new_token, Utc::now()).unwrap().kid, "new");
        // Past the window the old key verifies nothing; the new one still does.
        let later = retire + chrono::TimeDelta::seconds(1);
        assert_eq!(rotated.verify(&old_token, later), Err(AuthError::BadToken));
        assert!(rotated.verify(&new_token, later).is_ok());
        // Dropping the old key from the file ends its tokens at once.
        let only_new = keys(&[("new", S2)]);
        assert_eq!(
            only_new.verify(&old_token, Utc::now()),
            Err(AuthError::BadToken)
        );
    }

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

    #[test]
    fn scopes_cover_their_projects_only() {
        let exact = Scope::parse("acme").unwrap();
        assert!(exact.covers(&p("acme")) && !exact.covers(&p("acme2")));
        let prefix = Scope::parse("acme-*").unwrap();
        assert!(prefix.covers(&p("acme-1")) && !prefix.covers(&p("acme")));
        let all = Scope::parse("*").unwrap();
        assert!(all.covers(&p("x")));
        assert!(
            all.covers_scope(&prefix) && prefix.covers_scope(&Scope::parse("acme-1*").unwrap())
        );
        assert!(prefix.covers_scope(&Scope::parse("acme-7").unwrap()));
        assert!(!prefix.covers_scope(&all) && !exact.covers_scope(&prefix));
        for bad in ["a.b", "a*b*", ">", "a b", "", "**"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Scope::parse("acme-*").unwrap().to_string(), "acme-*");
    }

    #[test]
    fn rights_parse_and_print() {
        let r = Rights::parse("read, upload").unwrap();
        assert_eq!(r.to_string(), "upload,read");
        assert!(Rights::parse("").is_err() && Rights::parse("write").is_err());
        assert!(
            Rights::parse("upload,read,subscribe,admin")
                .unwrap()
                .covers(r)
        );
        assert!(!r.covers(Rights::parse("admin").unwrap()));
    }

    #[test]
    fn auto_is_open_on_loopback_only() {
        let local = "http://127.0.0.1:8080";
        assert!(!Switch::Auto.resolve("127.0.0.1:8080".parse().unwrap(), local));
        assert!(!Switch::Auto.resolve("[::1]:8080".parse().unwrap(), "http://[::1]:8080/"));
        assert!(!Switch::Auto.resolve("127.0.0.1:8080".parse().unwrap(), "http://localhost:8080"));
        assert!(Switch::Auto.resolve("0.0.0.0:8080".parse().unwrap(), local));
        // Behind a reverse proxy on the same host: loopback listen, public URL outside.
        assert!(Switch::Auto.resolve(
            "127.0.0.1:8080".parse().unwrap(),
            "https://photos.example.com"
        ));
        assert!(Switch::On.resolve("127.0.0.1:1".parse().unwrap(), local));
        assert!(!Switch::Off.resolve("0.0.0.0:1".parse().unwrap(), "https://x.example"));
    }
}
