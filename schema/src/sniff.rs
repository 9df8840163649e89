//! Recognising an image format from its first bytes (never from a name or a declared type).

/// The content type of the image format these bytes start with, for the formats we accept.
pub fn sniff_image(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && starts(b"RIFF") && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some("image/tiff")
    } else if starts(b"BM") {
        Some("image/bmp")
    } else {
        heif_brand(head)
    }
}

/// HEIC/HEIF and AVIF: an ISO-BMFF `ftyp` box whose major brand names an image format.
fn heif_brand(head: &[u8]) -> Option<&'static str> {
    if head.len() < 12 || &head[4..8] != b"ftyp" {
        return None;
    }
    match &head[8..12] {
        b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
            Some("image/heic")
        }
        b"avif" | b"avis" => Some("image/avif"),
        _ => None,
    }
}

/// How many leading bytes [`sniff_image`] and [`known_unsupported`] need.
pub const SNIFF_LEN: u64 = 16;

/// Image formats people upload that we recognise but don't decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    JpegXl,
    Svg,
}

/// Recognises the formats of [`Unsupported`] from their first bytes: the JPEG XL signatures,
/// SVG's XML start.
pub fn known_unsupported(head: &[u8]) -> Option<Unsupported> {
    if head.starts_with(&[0xFF, 0x0A]) || head.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Some(Unsupported::JpegXl);
    }
    let text = head.trim_ascii_start();
    if text.starts_with(b"<svg") || text.starts_with(b"<?xml") {
        return Some(Unsupported::Svg);
    }
    None
}

/// The message of an `unsupported_format` refusal: what to upload instead.
pub fn unsupported_message(format: Option<Unsupported>) -> &'static str {
    match format {
        Some(Unsupported::JpegXl) => {
            "JPEG XL images are not supported yet: upload a JPEG, PNG or WebP"
        }
        Some(Unsupported::Svg) => {
            "SVG is not accepted (it can carry script): upload a JPEG, PNG or WebP"
        }
        None => "not a JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC or AVIF image",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_accepted_formats_only() {
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(sniff_image(b"<svg xmlns="), None);
        assert_eq!(sniff_image(b"hello"), None);
        assert_eq!(sniff_image(b""), None);
    }

    #[test]
    fn recognises_heic_and_avif_by_brand() {
        assert_eq!(
            sniff_image(b"\0\0\0\x18ftypheic\0\0\0\0"),
            Some("image/heic")
        );
        assert_eq!(
            sniff_image(b"\0\0\0\x1cftypmif1\0\0\0\0"),
            Some("image/heic")
        );
        assert_eq!(
            sniff_image(b"\0\0\0\x1cftypavif\0\0\0\0"),
            Some("image/avif")
        );
        // An MP4 video is ISO-BMFF too.
        assert_eq!(sniff_image(b"\0\0\0\x1cftypisom\0\0\0\0"), None);
    }

    #[test]
    fn names_the_formats_we_refuse() {
        assert_eq!(
            known_unsupported(&[0xFF, 0x0A, 1]),
            Some(Unsupported::JpegXl)
        );
        assert_eq!(known_unsupported(b"  <svg xmlns="), Some(Unsupported::Svg));
        assert_eq!(known_unsupported(b"hello"), None);
        assert!(unsupported_message(Some(Unsupported::Svg)).contains("SVG"));
    }
}
