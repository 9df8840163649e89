//! The link-signing secret: `GALLERY_SECRET` when set (replicas must share it), otherwise
//! generated once and kept in the data dir with owner-only permissions.

use std::path::Path;

pub fn load_or_create(explicit: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = explicit {
        anyhow::ensure!(
            secret.len() >= 32 && !gallery_api::auth::is_known_secret(secret),
            "GALLERY_SECRET must be at least 32 random characters (e.g. `openssl rand -hex 32`), \
             not a published example"
        );
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        anyhow::ensure!(
            existing.len() >= 32,
            "{} is too short; delete it to regenerate",
            path.display()
        );
        return Ok(existing.as_bytes().to_vec());
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    gallery_nats::write_private(&path, secret.as_bytes())?;
    Ok(secret.into_bytes())
}
