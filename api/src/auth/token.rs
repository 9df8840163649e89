//! The token format: PASETO `v4.local`, minted with the signing key and verified by the key
//! its footer names (with a cache of tokens verified already).

use std::time::Duration;

use chrono::{DateTime, Utc};
use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::footer::Footer;
use pasetors::paserk::Id;
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Local, local};

use super::AuthError;
use super::claims::{Grant, Rights, Scope};
use super::keys::TokenKeys;

/// Bound into every token (PASETO's implicit assertion): a token made for something else with
/// the same key never verifies here.
const IMPLICIT: &[u8] = b"lite-gallery project token v1";
/// The longest token lifetime `gallery token` and `POST /tokens` hand out.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Verified tokens kept at most.
const VERIFIED_CACHE: usize = 10_000;

impl TokenKeys {
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

#[cfg(test)]
mod tests {
    use super::super::claims::Right;
    use super::super::keys::KeyEntry;
    use super::super::keys::tests::{S1, S2, keys};
    use super::*;
    use gallery_schema::ProjectId;

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
}
