//! Stable machine-readable error codes (docs/ARCHITECTURE.md §6). They appear in HTTP error bodies, `Failed`
//! events and WebSocket messages; renaming one breaks clients.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidProjectId,
    NotFound,
    Conflict,
    LinkExpired,
    BadSignature,
    UploadExpired,
    UploadTooLarge,
    UnsupportedFormat,
    ImageTooLarge,
    CorruptImage,
    /// The render crashed its render worker process `GALLERY_CRASH_LIMIT` times.
    ProcessingCrashed,
    /// The render ran past its deadline (`GALLERY_JOB_DEADLINE`).
    ProcessingTimeout,
    RetriesExhausted,
    Internal,
    /// No token, or one that is not valid (HTTP only).
    Unauthorized,
    /// A valid token without the right for this project (HTTP only).
    Forbidden,
    /// Too many requests from one address or token; `Retry-After` says when (HTTP only).
    RateLimited,
    /// An import's URL (or a redirect) names something the service won't fetch: not
    /// http(s), or an address that isn't public.
    FetchRefused,
    /// An import's source failed: DNS, connection, HTTP status, time limit.
    FetchFailed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
        Self::InvalidRequest,
        Self::InvalidProjectId,
        Self::NotFound,
        Self::Conflict,
        Self::LinkExpired,
        Self::BadSignature,
        Self::UploadExpired,
        Self::UploadTooLarge,
        Self::UnsupportedFormat,
        Self::ImageTooLarge,
        Self::CorruptImage,
        Self::ProcessingCrashed,
        Self::ProcessingTimeout,
        Self::RetriesExhausted,
        Self::Internal,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimited,
        Self::FetchRefused,
        Self::FetchFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidProjectId => "invalid_project_id",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::LinkExpired => "link_expired",
            Self::BadSignature => "bad_signature",
            Self::UploadExpired => "upload_expired",
            Self::UploadTooLarge => "upload_too_large",
            Self::UnsupportedFormat => "unsupported_format",
            Self::ImageTooLarge => "image_too_large",
            Self::CorruptImage => "corrupt_image",
            Self::ProcessingCrashed => "processing_crashed",
            Self::ProcessingTimeout => "processing_timeout",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::FetchRefused => "fetch_refused",
            Self::FetchFailed => "fetch_failed",
        }
    }

    /// Codes from an older or newer peer that we don't know map to `internal`, so a log
    /// written by a newer version still folds.
    pub fn parse_lenient(raw: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .unwrap_or(Self::Internal)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse_lenient(code.as_str()), code);
            let json = format!("{:?}", code.as_str());
            let via_serde: ErrorCode = serde_json_from_str(&json);
            assert_eq!(via_serde, code);
        }
        assert_eq!(ErrorCode::parse_lenient("new_code"), ErrorCode::Internal);
    }

    fn serde_json_from_str(s: &str) -> ErrorCode {
        use serde::de::IntoDeserializer;
        let inner = s.trim_matches('"').to_owned();
        let d: serde::de::value::StringDeserializer<serde::de::value::Error> =
            inner.into_deserializer();
        ErrorCode::deserialize(d).unwrap()
    }
}
