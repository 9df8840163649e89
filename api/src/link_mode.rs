//! How this deployment hands out links: signed by the api itself (local mode) or presigned for
//! S3. A leaf, so the wire types can sign links without reaching for the shared state.

use crate::sigv4::Credentials;

/// Where clients send bytes and fetch versions.
#[derive(Debug, Clone)]
pub enum LinkMode {
    /// The api serves uploads and downloads itself, with HMAC-signed links.
    Local,
    /// Clients go straight to S3: presigned POST policies and presigned GETs.
    S3(S3Links),
}

#[derive(Debug, Clone)]
pub struct S3Links {
    pub bucket: String,
    /// Scheme and authority clients use (`http://localhost:9000`), which may differ from the
    /// endpoint the services use.
    pub public_endpoint: String,
    pub credentials: Credentials,
}
