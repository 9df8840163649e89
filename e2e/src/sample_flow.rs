//! The sample flow of the original task, as the tests drive it and expect it: one image asked
//! for, uploaded with its link's form and processed ([`TestStack::sample_flow`]); the messages
//! its project's WebSocket carries meanwhile ([`SAMPLE_FLOW_TYPES`], [`SAMPLE_FLOW_STATES`],
//! [`RENDERED_VERSIONS`]); and the same eight events as the log holds them, for benches that
//! need a log of many images ([`sample_flow_events`]).

use anyhow::{Context, bail};
use serde_json::Value;

use crate::TestStack;

/// The `type` of each WebSocket message of one image's sample flow, in order: the link, the
/// upload, the start, the four versions, the end.
pub const SAMPLE_FLOW_TYPES: [&str; 8] = [
    "upload_requested",
    "uploaded",
    "processing_started",
    "version_rendered",
    "version_rendered",
    "version_rendered",
    "version_rendered",
    "processed",
];

/// The image's `state` each of those messages carries.
pub const SAMPLE_FLOW_STATES: [&str; 8] = [
    "init",
    "uploaded",
    "processing",
    "processing",
    "processing",
    "processing",
    "processing",
    "done",
];

/// The four rendered versions, in the order they are rendered (largest first): the `version`
/// of the sample flow's four `version_rendered` messages.
pub const RENDERED_VERSIONS: [&str; 4] = ["d2500", "big_1920", "big_thumb", "thumb"];

/// Each message's `type`.
pub fn types_of<'a>(messages: impl IntoIterator<Item = &'a Value>) -> Vec<&'a str> {
    messages
        .into_iter()
        .map(|m| m["type"].as_str().expect("a message with a type"))
        .collect()
}

/// An image taken through the sample flow.
pub struct Done {
    pub id: String,
    /// The answer of `POST /images/`.
    pub link: Value,
    /// The image's record once `done`.
    pub record: Value,
}

impl TestStack {
    /// The sample flow for one file: a link for `filename` in `project`, `bytes` uploaded with
    /// the link's form, then the image polled until `done`. The upload must be taken: 201 from
    /// the api in local mode, any 2xx from the store in S3 mode.
    pub async fn sample_flow(
        &self,
        project: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Done> {
        let link = self.request_link(project, filename).await?;
        let id = link["image_id"].as_str().context("image_id")?.to_owned();
        let (status, body) = self.upload(&link, bytes).await?;
        let taken = match self.config.s3 {
            Some(_) => (200..300).contains(&status),
            None => status == 201,
        };
        if !taken {
            bail!("uploading {filename} gave {status}: {body}");
        }
        let record = self.wait_state(&id, "done").await?;
        Ok(Done { id, link, record })
    }
}

/// The eight events of one image's sample flow (link, upload, start, four versions, processed),
/// for benches that need a log or a model of many images.
pub fn sample_flow_events(
    project: &gallery_schema::ProjectId,
    image: gallery_schema::ImageId,
) -> Vec<gallery_schema::Event> {
    use gallery_schema::{
        Event, EventBody, UploadRequested, Uploaded, VersionName, VersionRendered,
    };
    let key = gallery_schema::keys::original_key(project, &image);
    let mut bodies = vec![
        EventBody::UploadRequested(UploadRequested {
            filename: "IMG_0001.jpg".into(),
            object_key: key,
            content_type: "image/jpeg".into(),
            declared_size: None,
            link_expires_at: chrono::Utc::now() + chrono::TimeDelta::minutes(15),
            max_bytes: 50_000_000,
            source_url: None,
        }),
        EventBody::Uploaded(Uploaded {
            size: 4_000_000,
            etag: "\"0123456789abcdef\"".into(),
            generation: 1,
        }),
        EventBody::ProcessingStarted {
            attempt: 1,
            generation: 1,
        },
    ];
    for version in VersionName::CASCADE {
        bodies.push(EventBody::VersionRendered(VersionRendered {
            version,
            key: gallery_schema::keys::version_key(project, &image, 1, version, "jpg"),
            width: 1000,
            height: 750,
            bytes: 100_000,
            content_type: "image/jpeg".into(),
            generation: 1,
        }));
    }
    bodies.push(EventBody::Processed {
        generation: 1,
        width: 4000,
        height: 3000,
        thumbhash: vec![0x5a; 24],
        sha256: Some([0x11; 32]),
        renditions_version: 1,
    });
    bodies
        .into_iter()
        .map(|body| Event::new(project.clone(), image, body))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallery_schema::{EventBody, ImageId, ProjectId};

    /// The benches' log is the flow the tests expect on the WebSocket.
    #[test]
    fn the_benches_events_are_the_sample_flow() {
        let project = ProjectId::parse("p").unwrap();
        let events = sample_flow_events(&project, ImageId::new_v7());
        let kinds: Vec<&str> = events.iter().map(|e| e.kind().as_str()).collect();
        assert_eq!(kinds, SAMPLE_FLOW_TYPES);
        let states: Vec<&str> = events
            .iter()
            .map(|e| e.kind().state_after().as_str())
            .collect();
        assert_eq!(states, SAMPLE_FLOW_STATES);
        let versions: Vec<&str> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::VersionRendered(v) => Some(v.version.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(versions, RENDERED_VERSIONS);
    }
}
