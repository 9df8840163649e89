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
    /// Deleted: gone from listings; its objects are removed. Only WebSocket messages of the
    /// `deleted` event carry it.
    Deleted,
}

impl ImageState {
    pub const ALL: [ImageState; 6] = [
        Self::Init,
        Self::Uploaded,
        Self::Processing,
        Self::Done,
        Self::Error,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Uploaded => "uploaded",
            Self::Processing => "processing",
            Self::Done => "done",
            Self::Error => "error",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "init" => Self::Init,
            "uploaded" => Self::Uploaded,
            "processing" => Self::Processing,
            "done" => Self::Done,
            "error" => Self::Error,
            "deleted" => Self::Deleted,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_listed_and_parses_back() {
        for state in ImageState::ALL {
            assert_eq!(ImageState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ImageState::ALL.len(), 6);
    }
}
