//! The accepted upload content types: an explicit list, never `image/*` (an SVG is script).

use gallery_schema::sniff::Unsupported;

pub const ACCEPTED: [&str; 8] = [
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/tiff",
    "image/bmp",
    "image/heic",
    "image/avif",
];

/// Normalises and checks a declared type: case-insensitive, parameters dropped.
pub fn accept(declared: &str) -> Option<&'static str> {
    let essence = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let essence = match essence.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        // An animated PNG is a PNG (its first frame is rendered).
        "image/apng" | "image/vnd.mozilla.apng" | "image/x-png" => "image/png",
        "image/x-ms-bmp" | "image/x-bmp" => "image/bmp",
        "image/x-tiff" => "image/tiff",
        "image/heif" | "image/heic-sequence" | "image/heif-sequence" => "image/heic",
        "image/avif-sequence" => "image/avif",
        other => other,
    };
    ACCEPTED.into_iter().find(|t| *t == essence)
}

/// The type a file name suggests, when the client didn't declare one.
pub fn from_filename(filename: &str) -> Option<&'static str> {
    let ext = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        // MPO (phones' multi-picture files) starts with an ordinary JPEG, which is what we render.
        "jpg" | "jpeg" | "jpe" | "jfif" | "jfi" | "jif" | "pjpeg" | "pjp" | "mpo" => "image/jpeg",
        // Animated PNGs are PNGs; the first frame is rendered.
        "png" | "apng" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "tif" | "tiff" => "image/tiff",
        "bmp" | "dib" => "image/bmp",
        "heic" | "heif" | "hif" | "heics" | "heifs" => "image/heic",
        "avif" | "avifs" => "image/avif",
        _ => return None,
    })
}

/// A known image format we refuse, from a file name's extension or a declared type, so the
/// refusal can say what to upload instead.
pub fn known_unsupported(name_or_type: &str) -> Option<Unsupported> {
    let lower = name_or_type.to_ascii_lowercase();
    let key = lower
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .rsplit(['.', '/'])
        .next()
        .unwrap_or("");
    match key {
        "jxl" => Some(Unsupported::JpegXl),
        "svg" | "svgz" | "svg+xml" => Some(Unsupported::Svg),
        _ => None,
    }
}

/// The type a stored version is served with, from its extension.
pub fn for_version_key(key: &str) -> &'static str {
    if key.ends_with(".png") {
        "image/png"
    } else {
        "image/jpeg"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_raster_types_are_accepted() {
        assert_eq!(accept("image/JPEG; charset=x"), Some("image/jpeg"));
        assert_eq!(accept("image/jpg"), Some("image/jpeg"));
        for bad in [
            "image/svg+xml",
            "image/*",
            "text/html",
            "",
            "application/octet-stream",
        ] {
            assert_eq!(accept(bad), None, "{bad}");
        }
        assert_eq!(from_filename("IMG_0001.JPG"), Some("image/jpeg"));
        assert_eq!(from_filename("logo.svg"), None);
        assert_eq!(from_filename("noext"), None);
        assert_eq!(from_filename("frame.MPO"), Some("image/jpeg"));
        assert_eq!(from_filename("IMG_0001.HEIC"), Some("image/heic"));
        assert_eq!(accept("image/heif"), Some("image/heic"));
        assert_eq!(from_filename("a.avif"), Some("image/avif"));
        // Other common extensions and names of accepted formats.
        assert_eq!(from_filename("spinner.apng"), Some("image/png"));
        assert_eq!(accept("image/apng"), Some("image/png"));
        assert_eq!(accept("image/vnd.mozilla.apng"), Some("image/png"));
        assert_eq!(from_filename("scan.JFIF"), Some("image/jpeg"));
        assert_eq!(from_filename("old.dib"), Some("image/bmp"));
        assert_eq!(accept("image/x-ms-bmp"), Some("image/bmp"));
        assert_eq!(from_filename("burst.avifs"), Some("image/avif"));
        assert_eq!(known_unsupported("a.jxl"), Some(Unsupported::JpegXl));
        assert_eq!(known_unsupported("image/svg+xml"), Some(Unsupported::Svg));
        assert_eq!(known_unsupported("photo.jpg"), None);
    }
}
