//! AWS Signature Version 4, the two pieces object_store doesn't give us:
//!
//! - browser uploads with an HTML form POST (a "POST policy"): object_store signs GET/PUT/HEAD
//!   URLs but not policies, and only a policy can cap the upload size (`content-length-range`)
//!   while pinning the key and the content type;
//! - presigned GET URLs for a *public* endpoint that differs from the one we talk to (in
//!   docker-compose the api reaches `minio:9000`, browsers `localhost:9000`), without a second
//!   client.
//!
//! Pure: the clock and credentials are parameters. Tested against the worked examples in the
//! AWS documentation. Keys we sign contain only `[A-Za-z0-9_./-]` (ids are validated), which
//! need no URI encoding; `uri_encode` still handles anything else per the SigV4 rules.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key for a day (`YYYYMMDD`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// hex(HMAC(signing key, base64 policy)): the signature of a POST policy.
pub fn sign_policy(policy_b64: &str, creds: &Credentials, date: &str) -> String {
    hex::encode(hmac(
        &signing_key(&creds.secret_access_key, date, &creds.region, "s3"),
        policy_b64.as_bytes(),
    ))
}

/// What an upload policy pins.
#[derive(Debug, Clone)]
pub struct PostPolicy<'a> {
    pub key: &'a str,
    pub content_type: &'a str,
    pub max_bytes: u64,
    pub expires_at: DateTime<Utc>,
}

/// The form fields a client sends, in this order, before the file (field `file`).
///
/// Every field has a condition and every condition a field: Garage checks both ways (AWS and
/// MinIO one way). There is deliberately no `bucket` condition: Garage would want it sent as a
/// field, which AWS doesn't expect; the URL names the bucket and the key is pinned anyway.
pub fn post_form(
    policy: &PostPolicy<'_>,
    creds: &Credentials,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let date = now.format("%Y%m%d").to_string();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!(
        "{}/{date}/{}/s3/aws4_request",
        creds.access_key_id, creds.region
    );
    let document: Value = json!({
        "expiration": policy.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "conditions": [
            { "key": policy.key },
            { "Content-Type": policy.content_type },
            ["content-length-range", 1, policy.max_bytes],
            { "success_action_status": "201" },
            { "x-amz-algorithm": ALGORITHM },
            { "x-amz-credential": credential },
            { "x-amz-date": amz_date },
        ],
    });
    let policy_b64 = base64::engine::general_purpose::STANDARD.encode(document.to_string());
    let signature = sign_policy(&policy_b64, creds, &date);
    vec![
        ("key".into(), policy.key.into()),
        ("Content-Type".into(), policy.content_type.into()),
        ("success_action_status".into(), "201".into()),
        ("x-amz-algorithm".into(), ALGORITHM.into()),
        ("x-amz-credential".into(), credential),
        ("x-amz-date".into(), amz_date),
        ("policy".into(), policy_b64),
        ("x-amz-signature".into(), signature),
    ]
}

/// SigV4 URI encoding: unreserved characters stay, everything else is `%XX`; `/` stays in
/// paths and is encoded in query values.
pub fn uri_encode(raw: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `Host` a client will send for `base`: browsers and HTTP clients omit a scheme's default
/// port, and the signature must match what they send.
pub fn signed_host(base: &str) -> &str {
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let host = rest.split('/').next().unwrap_or(rest);
    match scheme {
        "https" => host.strip_suffix(":443").unwrap_or(host),
        "http" => host.strip_suffix(":80").unwrap_or(host),
        _ => host,
    }
}

/// A presigned GET URL. `base` is scheme and authority (`http://localhost:9000`) and `path` the
/// absolute path (`/bucket/key` for path-style addressing).
pub fn presign_get(
    base: &str,
    path: &str,
    creds: &Credentials,
    now: DateTime<Utc>,
    expires_secs: u64,
) -> String {
    presign("GET", base, path, &[], creds, now, expires_secs)
}

/// A presigned URL for any method, with extra query parameters (`("cors", "")` for a bucket's
/// CORS configuration, say) signed in; the payload is unsigned.
pub fn presign(
    method: &str,
    base: &str,
    path: &str,
    extra_query: &[(&str, &str)],
    creds: &Credentials,
    now: DateTime<Utc>,
    expires_secs: u64,
) -> String {
    let host = signed_host(base);
    let date = now.format("%Y%m%d").to_string();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!(
        "{}/{date}/{}/s3/aws4_request",
        creds.access_key_id, creds.region
    );
    let path = uri_encode(path, true);
    let mut params: Vec<(String, String)> = vec![
        ("X-Amz-Algorithm".into(), ALGORITHM.into()),
        ("X-Amz-Credential".into(), uri_encode(&credential, false)),
        ("X-Amz-Date".into(), amz_date.clone()),
        ("X-Amz-Expires".into(), expires_secs.to_string()),
        ("X-Amz-SignedHeaders".into(), "host".into()),
    ];
    for (k, v) in extra_query {
        params.push((uri_encode(k, false), uri_encode(v, false)));
    }
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!("{method}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{date}/{}/s3/aws4_request\n{}",
        creds.region,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let signature = hex::encode(hmac(
        &signing_key(&creds.secret_access_key, &date, &creds.region, "s3"),
        to_sign.as_bytes(),
    ));
    format!(
        "{}{path}?{query}&X-Amz-Signature={signature}",
        base.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        }
    }

    /// "Example: Browser-Based Upload using HTTP POST (Using AWS Signature Version 4)",
    /// Amazon S3 API Reference (sigv4-post-example): the base64 policy and its signature.
    #[test]
    fn post_policy_signature_matches_the_aws_worked_example() {
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        assert_eq!(
            sign_policy(policy, &example_creds(), "20151229"),
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    /// "Example: Presigned URL" of "Authenticating Requests: Using Query Parameters (AWS
    /// Signature Version 4)", Amazon S3 API Reference (sigv4-query-string-auth).
    #[test]
    fn presigned_get_matches_the_aws_worked_example() {
        let now = DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let url = presign_get(
            "https://examplebucket.s3.amazonaws.com",
            "/test.txt",
            &example_creds(),
            now,
            86400,
        );
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn the_signed_host_is_what_clients_send() {
        assert_eq!(signed_host("https://s3.example:443"), "s3.example");
        assert_eq!(signed_host("http://localhost:80/"), "localhost");
        assert_eq!(signed_host("http://localhost:9000"), "localhost:9000");
        assert_eq!(signed_host("https://s3.example/prefix"), "s3.example");
    }

    #[test]
    fn post_form_pins_key_type_and_size_and_has_a_condition_for_every_field() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let policy = PostPolicy {
            key: "originals/42/x",
            content_type: "image/jpeg",
            max_bytes: 1000,
            expires_at: now + chrono::TimeDelta::minutes(15),
        };
        let fields = post_form(&policy, &example_creds(), now);
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let doc: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(get("policy"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(doc["expiration"], "2026-01-02T03:19:05.000Z");
        let conditions = doc["conditions"].as_array().unwrap();
        assert!(conditions.contains(&json!(["content-length-range", 1, 1000])));
        for (name, value) in &fields {
            if name == "policy" || name == "x-amz-signature" {
                continue;
            }
            assert!(
                conditions.contains(&json!({ name.as_str(): value })),
                "{name} has no condition"
            );
        }
        assert_eq!(
            get("x-amz-credential"),
            "AKIAIOSFODNN7EXAMPLE/20260102/us-east-1/s3/aws4_request"
        );
        assert_eq!(
            get("x-amz-signature"),
            sign_policy(&get("policy"), &example_creds(), "20260102")
        );
        assert_eq!(fields.last().unwrap().0, "x-amz-signature");
    }
}
