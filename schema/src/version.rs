//! The rendered versions and their boxes (docs/ARCHITECTURE.md §7). The order of [`VersionName::CASCADE`] is
//! the render order: each version is derived from the previous, larger one.

use serde::{Deserialize, Serialize};

use crate::fit::Size;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionName {
    Thumb,
    BigThumb,
    #[serde(rename = "big_1920")]
    Big1920,
    D2500,
}

impl VersionName {
    /// Largest first: the render cascade.
    pub const CASCADE: [VersionName; 4] = [Self::D2500, Self::Big1920, Self::BigThumb, Self::Thumb];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Thumb => "thumb",
            Self::BigThumb => "big_thumb",
            Self::Big1920 => "big_1920",
            Self::D2500 => "d2500",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::CASCADE.into_iter().find(|v| v.as_str() == raw)
    }

    /// The box the version fits in.
    pub fn bounds(self) -> Size {
        self.rendition().bounds
    }

    /// The version's entry in [`RENDITIONS`].
    pub fn rendition(self) -> &'static Rendition {
        RENDITIONS
            .iter()
            .find(|r| r.name == self)
            .expect("every version has a rendition")
    }
}

/// One rendered version: its name, the box it is fitted into (aspect kept, never upscaled),
/// and its encoding. The format rule is the same for all: PNG when any pixel of the image is
/// not opaque, else JPEG at `jpeg_quality`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rendition {
    pub name: VersionName,
    pub bounds: Size,
    pub jpeg_quality: u8,
}

/// The renditions, largest first (the render cascade): the one description the processor
/// (what to render), the keys (one object per name and generation) and the api (a URL per
/// name) all follow. Change an entry and bump [`RENDITIONS_VERSION`]: images are recorded
/// with the version they were rendered with, and `gallery reprocess --outdated` re-renders
/// the older ones.
pub const RENDITIONS: [Rendition; 4] = [
    Rendition {
        name: VersionName::D2500,
        bounds: Size::new(2500, 2500),
        jpeg_quality: 85,
    },
    Rendition {
        name: VersionName::Big1920,
        bounds: Size::new(1920, 1080),
        jpeg_quality: 85,
    },
    Rendition {
        name: VersionName::BigThumb,
        bounds: Size::new(700, 700),
        jpeg_quality: 85,
    },
    Rendition {
        name: VersionName::Thumb,
        bounds: Size::new(150, 120),
        jpeg_quality: 85,
    },
];

/// The version of [`RENDITIONS`]; recorded in every `processed` event (0 in events written
/// before it was).
pub const RENDITIONS_VERSION: u32 = 1;

impl std::fmt::Display for VersionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn the_renditions_are_the_cascade_in_order() {
        let names: Vec<VersionName> = RENDITIONS.iter().map(|r| r.name).collect();
        assert_eq!(names, VersionName::CASCADE);
        assert_eq!(VersionName::Thumb.bounds(), Size::new(150, 120));
        assert_eq!(VersionName::Big1920.bounds(), Size::new(1920, 1080));
        assert!(
            RENDITIONS
                .iter()
                .all(|r| (1..=100).contains(&r.jpeg_quality))
        );
    }

    #[test]
    fn cascade_is_largest_first_and_names_round_trip() {
        let areas: Vec<u64> = VersionName::CASCADE
            .iter()
            .map(|v| v.bounds().pixels())
            .collect();
        assert!(areas.windows(2).all(|w| w[0] > w[1]));
        for v in VersionName::CASCADE {
            assert_eq!(VersionName::parse(v.as_str()), Some(v));
            // serde (JSON keys, records) must use the same names as the contract.
            use serde::de::IntoDeserializer;
            let d: serde::de::value::StrDeserializer<serde::de::value::Error> =
                v.as_str().into_deserializer();
            assert_eq!(VersionName::deserialize(d).unwrap(), v);
        }
    }
}
