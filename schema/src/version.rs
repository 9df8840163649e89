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

    pub fn bounds(self) -> Size {
        match self {
            Self::Thumb => Size::new(150, 120),
            Self::BigThumb => Size::new(700, 700),
            Self::Big1920 => Size::new(1920, 1080),
            Self::D2500 => Size::new(2500, 2500),
        }
    }
}

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
