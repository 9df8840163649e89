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
//!
//! What a token grants is `claims.rs`, the keys file `keys.rs`, minting and verifying
//! `token.rs`; `switch.rs` is the `--auth`/`--rate-limits` setting. Callers use the names
//! re-exported here.

mod claims;
mod keys;
mod switch;
mod token;

pub use claims::{Grant, Right, Rights, Scope};
pub use keys::{KeyEntry, MIN_SECRET_BYTES, TokenKeys, is_known_secret};
pub use switch::{Switch, is_loopback_url};
pub use token::MAX_TTL;

/// Why a token, a scope or rights, or the keys file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a token of ours, signed with no key we have, tampered with, or expired. One message
    /// for all: a client learns nothing about which check failed.
    #[error(
        "the token is not valid: malformed, expired, revoked, or signed with keys this service \
         doesn't have (mint it with the service's keys: `gallery token` with the service's --data-dir \
         or GALLERY_TOKEN_KEYS_FILE)"
    )]
    BadToken,
    #[error("{0}")]
    Invalid(String),
    #[error("token keys: {0}")]
    Keys(String),
}
