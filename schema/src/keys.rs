//! The storage layout (docs/ARCHITECTURE.md §5): where an image's original and its versions
//! live. One definition, used to write keys (api, processor) and to check keys that arrive in
//! events ([`crate::event::Event::decode_checked`]): an event can only name objects of its own
//! image, so a forged event can't make the api sign a link to somebody else's file.

use crate::ids::{ImageId, ProjectId};
use crate::version::VersionName;

/// File extensions of rendered versions: JPEG, or PNG when the source had transparency.
pub const VERSION_EXTENSIONS: [&str; 2] = ["jpg", "png"];

/// Where every original lives; the upload watcher lists it (docs/ARCHITECTURE.md §5).
pub const ORIGINALS_PREFIX: &str = "originals/";

/// `originals/<image>/<project>`: the uploaded bytes, as received. The image id comes first:
/// ids are UUIDv7, so keys sort by the time their upload link was made, and the upload watcher
/// finds the uploads of the last seconds with a few LIST requests over one contiguous range,
/// whatever their projects. The project stays in the key, so an event of one project can't
/// name another project's object.
pub fn original_key(project: &ProjectId, image: &ImageId) -> String {
    format!("{ORIGINALS_PREFIX}{image}/{project}")
}

/// The layout of releases before the time-ordered one: `originals/<project>/<image>`. Logs
/// written then still name it, and it stays valid for their images.
pub fn legacy_original_key(project: &ProjectId, image: &ImageId) -> String {
    format!("{ORIGINALS_PREFIX}{project}/{image}")
}

/// Whether `key` is this image's original, in either layout.
pub fn is_original_key(key: &str, project: &ProjectId, image: &ImageId) -> bool {
    key == original_key(project, image) || key == legacy_original_key(project, image)
}

/// The image an original's key names, in either layout (`None` for any other key).
pub fn original_image(key: &str) -> Option<ImageId> {
    let mut parts = key.strip_prefix(ORIGINALS_PREFIX)?.split('/');
    let (first, second) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    match (ImageId::parse(first), ImageId::parse(second)) {
        (Ok(image), Err(_)) if ProjectId::parse(second).is_ok() => Some(image),
        (Err(_), Ok(image)) if ProjectId::parse(first).is_ok() => Some(image),
        // A project named like a UUID: the current layout puts the image first.
        (Ok(image), Ok(_)) => Some(image),
        _ => None,
    }
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

/// The prefix under which every generation of an image's versions lives (the deleter removes
/// all of it).
pub fn versions_prefix(project: &ProjectId, image: &ImageId) -> String {
    format!("versions/{project}/{image}/")
}

/// The image and generation a version's key names (`None` for any other key).
pub fn version_image(key: &str) -> Option<(ProjectId, ImageId, u32)> {
    let mut parts = key.strip_prefix("versions/")?.split('/');
    let (project, image, generation, _file) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((
        ProjectId::parse(project).ok()?,
        ImageId::parse(image).ok()?,
        generation.parse().ok()?,
    ))
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
        assert_eq!(version_image(&key), Some((p.clone(), i, 2)));
        for other_key in ["versions/p1/x/2/thumb.jpg", "versions/p1", "originals/p1/x"] {
            assert_eq!(version_image(other_key), None, "{other_key}");
        }
        // Every generation of the image is under its prefix; no other image's is.
        assert!(key.starts_with(&versions_prefix(&p, &i)));
        assert!(!key.starts_with(&versions_prefix(&p, &other)));
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
    }

    #[test]
    fn original_keys_sort_by_time_and_name_their_image() {
        let p = ProjectId::parse("p1").unwrap();
        let q = ProjectId::parse("zz").unwrap();
        let older = ImageId::new_v7();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let newer = ImageId::new_v7();
        assert_eq!(original_key(&p, &older), format!("originals/{older}/p1"));
        // Time order across projects: the later link sorts later whatever its project.
        assert!(original_key(&q, &older) < original_key(&p, &newer));
        for key in [original_key(&p, &older), legacy_original_key(&p, &older)] {
            assert!(is_original_key(&key, &p, &older), "{key}");
            assert!(!is_original_key(&key, &q, &older), "{key}");
            assert!(!is_original_key(&key, &p, &newer), "{key}");
            assert_eq!(original_image(&key), Some(older), "{key}");
        }
        for other in [
            format!("originals/{older}"),
            format!("originals/{older}/p1/x"),
            format!("originals/{older}/../p1"),
            format!("versions/p1/{older}/1/thumb.jpg"),
            "originals/p1/p2".to_owned(),
        ] {
            assert_eq!(original_image(&other), None, "{other}");
        }
    }
}
