//! The photos a load run uploads: read once from a directory, and made byte-unique per upload
//! so that no content-hash deduplication can skip work.

use std::path::Path;

use anyhow::{Context, bail};

/// A photo as read from disk.
#[derive(Debug, Clone)]
pub struct Photo {
    pub name: String,
    pub bytes: Vec<u8>,
}

const EXTENSIONS: [&str; 11] = [
    "jpg", "jpeg", "png", "webp", "gif", "tif", "tiff", "bmp", "heic", "heif", "avif",
];

/// Every image file directly in `dir` (by extension), sorted by name.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Photo>> {
    let mut photos = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !path.is_file() || !ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
            continue;
        }
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        photos.push(Photo { name, bytes });
    }
    photos.sort_by(|a, b| a.name.cmp(&b.name));
    if photos.is_empty() {
        bail!(
            "no photos (jpg, png, webp, gif, tiff, bmp, heic, avif) in {}",
            dir.display()
        );
    }
    Ok(photos)
}

/// The photo with `nonce` in it: a JPEG gets a comment segment right after its start marker
/// (decoders skip it); other formats get the nonce appended after their end, which their
/// decoders ignore.
pub fn unique(bytes: &[u8], nonce: &str) -> Vec<u8> {
    let text = format!("gallery-load {nonce}");
    let mut out = Vec::with_capacity(bytes.len() + text.len() + 4);
    if bytes.starts_with(&[0xFF, 0xD8]) && text.len() + 2 <= usize::from(u16::MAX) {
        out.extend_from_slice(&bytes[..2]);
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&((text.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&bytes[2..]);
    } else {
        out.extend_from_slice(bytes);
        out.extend_from_slice(text.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_gets_a_comment_segment_and_stays_a_jpeg() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xD9];
        let a = unique(&jpeg, "a");
        let b = unique(&jpeg, "b");
        assert_ne!(a, b);
        assert_eq!(&a[..4], &[0xFF, 0xD8, 0xFF, 0xFE]);
        let len = u16::from_be_bytes([a[4], a[5]]) as usize;
        assert_eq!(&a[6..4 + len], b"gallery-load a");
        assert_eq!(&a[4 + len..], &jpeg[2..]);
    }

    #[test]
    fn other_formats_get_the_nonce_after_their_end() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        let out = unique(png, "n1");
        assert!(out.starts_with(png));
        assert!(out.ends_with(b"gallery-load n1"));
    }
}
