//! The image lifecycle as seen by clients.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    /// A link was handed out; no upload seen yet.
    Init,
    /// The original is stored; waiting for a processor.
    Uploaded,
    Processing,
    Done,
    Error,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Uploaded => "uploaded",
            Self::Processing => "processing",
            Self::Done => "done",
            Self::Error => "error",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "init" => Self::Init,
            "uploaded" => Self::Uploaded,
            "processing" => Self::Processing,
            "done" => Self::Done,
            "error" => Self::Error,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Error)
    }
}
