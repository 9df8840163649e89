//! HMAC-SHA256 signed links for local mode: upload links (the POST form's fields) and download
//! links. Pure: the clock is a parameter. Replicas share the secret (`GALLERY_SECRET`).
//!
//! The signed strings start with the link's purpose, so an upload signature can never pass as
//! a download signature, and every field is newline-separated after validation (no field can
//! contain a newline), so fields can't be shifted into one another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Signer {
    /// The HMAC keyed once: cloning it skips hashing the key's pads for every link (a listing
    /// of 50 `done` images signs 250).
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// The fields an upload link pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadGrant<'a> {
    pub image_id: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
    pub max_bytes: u64,
    /// Unix seconds.
    pub expires: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the signature does not match this link")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        assert!(
            secret.len() >= 16,
            "the signing secret must be at least 16 bytes"
        );
        Self {
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC takes any key length"),
        }
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        for (n, part) in parts.iter().enumerate() {
            if n > 0 {
                mac.update(b"\n");
            }
            mac.update(part.as_bytes());
        }
        mac
    }

    fn sign(&self, parts: &[&str]) -> String {
        let mut text = [0u8; 64];
        hex::encode_to_slice(self.mac(parts).finalize().into_bytes(), &mut text)
            .expect("32 bytes are 64 hex digits");
        String::from_utf8(text.to_vec()).expect("hex is ASCII")
    }

    fn check(&self, parts: &[&str], signature: &str) -> Result<(), LinkError> {
        let raw = hex::decode(signature).map_err(|_| LinkError::BadSignature)?;
        // Constant-time comparison.
        self.mac(parts)
            .verify_slice(&raw)
            .map_err(|_| LinkError::BadSignature)
    }

    fn upload_parts(g: &UploadGrant<'_>) -> [String; 6] {
        [
            "upload".into(),
            g.image_id.into(),
            g.key.into(),
            g.content_type.into(),
            g.max_bytes.to_string(),
            g.expires.to_string(),
        ]
    }

    pub fn sign_upload(&self, grant: &UploadGrant<'_>) -> String {
        let parts = Self::upload_parts(grant);
        self.sign(&parts.each_ref().map(String::as_str))
    }

    /// Checks the signature first (a forged link learns nothing about expiry), then the time.
    pub fn verify_upload(
        &self,
        grant: &UploadGrant<'_>,
        signature: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        let parts = Self::upload_parts(grant);
        self.check(&parts.each_ref().map(String::as_str), signature)?;
        if now > grant.expires {
            Err(LinkError::Expired)
        } else {
            Ok(())
        }
    }

    pub fn sign_download(&self, key: &str, expires: i64) -> String {
        self.sign(&["download", key, &expires.to_string()])
    }

    pub fn verify_download(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        self.check(&["download", key, &expires.to_string()], signature)?;
        if now > expires {
            Err(LinkError::Expired)
        } else {
            Ok(())
        }
    }
}

/// Download links expire at the end of an hour-aligned window at least `ttl_secs` away, so the
/// same version keeps the same URL for a while and browsers can cache it.
pub fn download_expiry(now: i64, ttl_secs: i64) -> i64 {
    const WINDOW: i64 = 3600;
    let at_least = now + ttl_secs;
    (at_least + WINDOW - 1).div_euclid(WINDOW) * WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires: i64) -> UploadGrant<'static> {
        UploadGrant {
            image_id: "019a0000-0000-7000-8000-000000000001",
            key: "originals/42/019a0000-0000-7000-8000-000000000001",
            content_type: "image/jpeg",
            max_bytes: 50_000_000,
            expires,
        }
    }

    #[test]
    fn upload_links_verify_until_they_expire() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let sig = s.sign_upload(&grant(1000));
        assert_eq!(s.verify_upload(&grant(1000), &sig, 999), Ok(()));
        assert_eq!(s.verify_upload(&grant(1000), &sig, 1000), Ok(()));
        assert_eq!(
            s.verify_upload(&grant(1000), &sig, 1001),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn tampering_with_any_field_breaks_the_signature() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let sig = s.sign_upload(&grant(1000));
        let tampered = [
            UploadGrant {
                expires: 99_999,
                ..grant(1000)
            },
            UploadGrant {
                key: "originals/42/other",
                ..grant(1000)
            },
            UploadGrant {
                content_type: "image/svg+xml",
                ..grant(1000)
            },
            UploadGrant {
                max_bytes: u64::MAX,
                ..grant(1000)
            },
            UploadGrant {
                image_id: "019a0000-0000-7000-8000-000000000002",
                ..grant(1000)
            },
        ];
        for g in tampered {
            assert_eq!(
                s.verify_upload(&g, &sig, 0),
                Err(LinkError::BadSignature),
                "{g:?}"
            );
        }
        assert_eq!(
            s.verify_upload(&grant(1000), "zz", 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify_upload(&grant(1000), "", 0),
            Err(LinkError::BadSignature)
        );
        // Another secret (another deployment) doesn't accept it either.
        let other = Signer::new(b"fedcba9876543210fedcba9876543210");
        assert_eq!(
            other.verify_upload(&grant(1000), &sig, 0),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn download_and_upload_signatures_are_not_interchangeable() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let key = "versions/42/x/1/thumb.jpg";
        let sig = s.sign_download(key, 7200);
        assert_eq!(s.verify_download(key, 7200, &sig, 0), Ok(()));
        assert_eq!(
            s.verify_download("versions/42/x/1/d2500.jpg", 7200, &sig, 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify_download(key, 7200, &sig, 7201),
            Err(LinkError::Expired)
        );
        let upload_sig = s.sign_upload(&grant(7200));
        assert_eq!(
            s.verify_download(key, 7200, &upload_sig, 0),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn download_expiry_is_hour_aligned_and_at_least_the_ttl() {
        assert_eq!(download_expiry(0, 3600), 3600);
        assert_eq!(download_expiry(1, 3600), 7200);
        for now in [0, 59, 3599, 3600, 100_000] {
            let e = download_expiry(now, 3600);
            assert!(e >= now + 3600 && e < now + 7200 && e % 3600 == 0);
        }
    }
}
