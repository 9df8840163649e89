//! Validated identifiers. `ProjectId` is a security boundary: it becomes a NATS subject token,
//! so anything outside `^[A-Za-z0-9_-]{1,64}$` (wildcards `*` and `>`, the separator `.`,
//! `$`, whitespace, non-ASCII) is refused here, once, before it can reach a subject.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("project_id must match ^[A-Za-z0-9_-]{{1,64}}$")]
    InvalidProjectId,
    #[error("image_id must be a UUID")]
    InvalidImageId,
}

/// A project id: 1 to 64 ASCII letters, digits, `_` or `-`. JSON clients may send it as a
/// string or an integer (42 and "42" are the same project); it is always echoed as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(String);

impl ProjectId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError::InvalidProjectId)
        }
    }

    pub fn from_integer(n: i64) -> Self {
        // Digits and an optional leading '-' always satisfy the rule, and i64 fits in 20 chars.
        Self(n.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProjectId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ProjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ProjectId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a project id: a string of [A-Za-z0-9_-]{1,64} or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProjectId, E> {
                ProjectId::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ProjectId, E> {
                Ok(ProjectId::from_integer(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ProjectId, E> {
                Ok(ProjectId(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An image id: a UUIDv7 when we mint it, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(Uuid);

impl ImageId {
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| IdError::InvalidImageId)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl FromStr for ImageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hyphenated lowercase: only [0-9a-f-], safe as a subject token and a key segment.
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_project_ids_are_refused() {
        let long = "a".repeat(65);
        for raw in [
            "*",
            ">",
            "a.b",
            "a b",
            "",
            long.as_str(),
            "проект",
            "..",
            "$SYS",
            "a*",
            "a>b",
            "a\tb",
            "a\nb",
            "a/b",
            "é",
            "a\0b",
        ] {
            assert_eq!(
                ProjectId::parse(raw),
                Err(IdError::InvalidProjectId),
                "{raw:?} must be refused"
            );
        }
    }

    #[test]
    fn plain_project_ids_are_accepted() {
        let max = "Z".repeat(64);
        for raw in ["42", "a", "my-project_1", max.as_str(), "-", "_"] {
            assert_eq!(ProjectId::parse(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn integers_and_strings_name_the_same_project() {
        let from_int: ProjectId = serde_json_like_int(42);
        assert_eq!(from_int, ProjectId::parse("42").unwrap());
        assert_eq!(ProjectId::from_integer(-7).as_str(), "-7");
        assert_eq!(ProjectId::from_integer(i64::MIN).as_str().len(), 20);
    }

    fn serde_json_like_int(n: u64) -> ProjectId {
        use serde::de::IntoDeserializer;
        let d: serde::de::value::U64Deserializer<serde::de::value::Error> = n.into_deserializer();
        ProjectId::deserialize(d).unwrap()
    }

    #[test]
    fn image_ids_round_trip_and_sort_by_creation() {
        let a = ImageId::new_v7();
        let b = ImageId::new_v7();
        assert!(a < b);
        assert_eq!(ImageId::parse(&a.to_string()).unwrap(), a);
        assert_eq!(ImageId::parse("x.y"), Err(IdError::InvalidImageId));
        assert_eq!(ImageId::parse("*"), Err(IdError::InvalidImageId));
    }
}
