//! What a token costs per request: minting and verifying PASETO v4.local tokens, and checking
//! the access of a verified grant. Prints figures; asserts nothing.
//!
//!     cargo bench -p gallery-api --bench tokens

use std::time::Instant;

use chrono::{TimeDelta, Utc};
use gallery_api::auth::{KeyEntry, Right, Rights, Scope, TokenKeys};
use gallery_schema::ProjectId;

fn main() {
    let keys = TokenKeys::from_entries(vec![
        KeyEntry {
            kid: "new".into(),
            secret: "5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b5e4d3c2b1a0f9e8d".into(),
            verify_until: None,
        },
        KeyEntry {
            kid: "old".into(),
            secret: "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978".into(),
            verify_until: None,
        },
    ])
    .unwrap();
    let scope = Scope::parse("project-42").unwrap();
    let rights = Rights::parse("upload,read,subscribe").unwrap();
    let expires = Utc::now() + TimeDelta::hours(1);
    let n = 20_000;

    let started = Instant::now();
    let mut token = String::new();
    for _ in 0..n {
        token = keys.mint(&scope, rights, expires).unwrap();
    }
    let mint = started.elapsed() / n;

    let project = ProjectId::parse("project-42").unwrap();
    let started = Instant::now();
    for _ in 0..n {
        let grant = keys.verify(&token, Utc::now()).unwrap();
        assert!(grant.scope.covers(&project) && grant.rights.contains(Right::Upload));
    }
    let verify = started.elapsed() / n;

    // Many different tokens: every one decrypted (the cache never hits).
    let many: Vec<String> = (0..2000)
        .map(|_| keys.mint(&scope, rights, expires).unwrap())
        .collect();
    let started = Instant::now();
    for t in &many {
        keys.verify(t, Utc::now()).unwrap();
    }
    let cold = started.elapsed() / many.len() as u32;

    let junk = format!("{}x", &token[..token.len() - 1]);
    let started = Instant::now();
    for _ in 0..n {
        assert!(keys.verify(&junk, Utc::now()).is_err());
    }
    let refuse = started.elapsed() / n;
    println!(
        "tokens ({} bytes): mint {:.1} us; verify and check: a token seen before {:.2} us, a new \
         one {:.1} us; refuse a tampered one {:.1} us (one core)",
        token.len(),
        mint.as_secs_f64() * 1e6,
        verify.as_secs_f64() * 1e6,
        cold.as_secs_f64() * 1e6,
        refuse.as_secs_f64() * 1e6
    );
}
