//! The storage layout (docs/ARCHITECTURE.md §5): where an image's original and its versions
//! live. One definition, used to write keys (api, processor) and to check keys that arrive in
//! events ([`crate::event::Event::decode_checked`]): an event can only name objects of its own
//! image, so a forged event can't make the api sign a link to somebody else's file.

use crate::ids::{ImageId, ProjectId};
use crate::version::VersionName;

/// File extensions of rendered versions: JPEG, or PNG when the source had transparency.
pub const VERSION_EXTENSIONS: [&str; 2] = ["jpg", "png"];

/// `originals/<project>/<image>`: the uploaded bytes, as received.
pub fn original_key(project: &ProjectId, image: &ImageId) -> String {
    format!("originals/{project}/{image}")
}

/// `versions/<project>/<image>/<generation>/<version>.<ext>`: immutable, one per generation.
pub fn version_key(
    project: &ProjectId,
    image: &ImageId,
    generation: u32,
    version: VersionName,
    extension: &str,
) -> String {
    format!("versions/{project}/{image}/{generation}/{version}.{extension}")
}

/// Whether `key` is one of the keys [`version_key`] gives for this image, generation and
/// version (with any of the [`VERSION_EXTENSIONS`]).
pub fn is_version_key(
    key: &str,
    project: &ProjectId,
    image: &ImageId,
    generation: u32,
    version: VersionName,
) -> bool {
    VERSION_EXTENSIONS
        .iter()
        .any(|ext| key == version_key(project, image, generation, version, ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_belong_to_their_image_only() {
        let p = ProjectId::parse("p1").unwrap();
        let i = ImageId::new_v7();
        let other = ImageId::new_v7();
        let key = version_key(&p, &i, 2, VersionName::Thumb, "jpg");
        assert_eq!(key, format!("versions/p1/{i}/2/thumb.jpg"));
        assert!(is_version_key(&key, &p, &i, 2, VersionName::Thumb));
        assert!(!is_version_key(&key, &p, &i, 1, VersionName::Thumb));
        assert!(!is_version_key(&key, &p, &i, 2, VersionName::BigThumb));
        assert!(!is_version_key(&key, &p, &other, 2, VersionName::Thumb));
        let q = ProjectId::parse("p2").unwrap();
        assert!(!is_version_key(&key, &q, &i, 2, VersionName::Thumb));
        for forged in [
            format!("originals/p1/{i}"),
            format!("versions/p1/{i}/2/thumb.html"),
            format!("versions/p1/{i}/2/../../p2/{other}/2/thumb.jpg"),
            format!("versions/p1/{i}/2/thumb.jpg/../x"),
        ] {
            assert!(
                !is_version_key(&forged, &p, &i, 2, VersionName::Thumb),
                "{forged}"
            );
        }
        assert_eq!(original_key(&p, &i), format!("originals/p1/{i}"));
    }
}
