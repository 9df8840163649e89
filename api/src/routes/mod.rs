//! Route groups, one module each. Handlers parse, call the log/store/read model, and shape
//! responses; they never declare NATS topology.

pub mod config;
pub mod create_image;
pub mod files;
pub mod health;
pub mod images;
pub mod projects;
pub mod tokens;
pub mod uploads;
pub mod web;
pub mod ws;

use std::time::Duration;

use gallery_schema::ImageId;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::view::Links;

pub(crate) fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn links(state: &AppState) -> Links<'_> {
    Links {
        base: &state.config.public_url,
        signer: &state.signer,
        ttl_secs: state.config.download_link_ttl.as_secs() as i64,
        now: now_secs(),
        s3: match &state.config.links {
            crate::link_mode::LinkMode::S3(s3) => Some(s3),
            crate::link_mode::LinkMode::Local => None,
        },
    }
}

/// Read-your-writes: after an append, wait until the read model has it.
pub(crate) async fn wait_applied(state: &AppState, seq: u64) {
    if !state.projector.wait_for(seq, Duration::from_secs(5)).await {
        tracing::warn!(seq, "read model did not catch up within 5 s");
    }
}

pub(crate) fn parse_image_id(raw: &str) -> ApiResult<ImageId> {
    ImageId::parse(raw).map_err(|_| ApiError::not_found("image"))
}

/// 404 for the api's own upload and download endpoints when clients talk to S3 directly.
pub(crate) fn local_mode_only(state: &AppState) -> ApiResult<()> {
    match state.config.links {
        crate::link_mode::LinkMode::Local => Ok(()),
        crate::link_mode::LinkMode::S3(_) => Err(ApiError::new(
            gallery_schema::ErrorCode::NotFound,
            "this deployment stores files in S3: upload with the link's form and download with the listed URLs",
        )),
    }
}
