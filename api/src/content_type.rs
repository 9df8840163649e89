//! The accepted upload content types: an explicit list, never `image/*` (an SVG is script).

pub const ACCEPTED: [&str; 6] = [
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/tiff",
    "image/bmp",
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
        other => other,
    };
    ACCEPTED.into_iter().find(|t| *t == essence)
}

/// The type a file name suggests, when the client didn't declare one.
pub fn from_filename(filename: &str) -> Option<&'static str> {
    let ext = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" | "jpe" | "jfif" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "tif" | "tiff" => "image/tiff",
        "bmp" => "image/bmp",
        _ => return None,
    })
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
    }
}
