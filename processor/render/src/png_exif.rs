//! EXIF in PNG text chunks. Besides the standard `eXIf` chunk (which the `image` crate reads),
//! ImageMagick and tools built on it store EXIF as a text chunk named "Raw profile type exif":
//! a name line, a length line and the bytes in hex. Photos converted that way must still come
//! out upright.

use std::io::Cursor;

use image::metadata::Orientation;

const KEYWORD: &str = "Raw profile type exif";

/// The orientation in a PNG's "Raw profile type exif" text chunk, if there is one.
pub fn raw_profile_orientation(png_bytes: &[u8]) -> Option<Orientation> {
    let reader = png::Decoder::new(Cursor::new(png_bytes)).read_info().ok()?;
    let info = reader.info();
    // Decompress with a cap: a small PNG can carry a text chunk that inflates to gigabytes.
    const MAX_TEXT: usize = 256 << 10;
    let text = if let Some(chunk) = info
        .compressed_latin1_text
        .iter()
        .find(|c| c.keyword == KEYWORD)
    {
        let mut chunk = chunk.clone();
        chunk.decompress_text_with_limit(MAX_TEXT).ok()?;
        chunk.get_text().ok()?
    } else if let Some(chunk) = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == KEYWORD)
    {
        chunk.text.clone()
    } else {
        let mut chunk = info
            .utf8_text
            .iter()
            .find(|c| c.keyword == KEYWORD)?
            .clone();
        chunk.decompress_text_with_limit(MAX_TEXT).ok()?;
        chunk.get_text().ok()?
    };
    let exif = decode_raw_profile(&text)?;
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(&exif);
    Orientation::from_exif_chunk(tiff)
}

/// `"\nexif\n     154\n4578696600004d4d..."` → the bytes.
pub fn decode_raw_profile(text: &str) -> Option<Vec<u8>> {
    let mut lines = text.trim_start().lines();
    lines.next()?; // the profile's name
    let len: usize = lines.next()?.trim().parse().ok()?;
    let digits: Vec<u8> = lines
        .flat_map(str::bytes)
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes: Option<Vec<u8>> = digits
        .chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect();
    let bytes = bytes?;
    (bytes.len() >= len).then(|| bytes[..len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_imagemagick_raw_profiles() {
        let text = "\nexif\n       6\n457869660000\n";
        assert_eq!(decode_raw_profile(text).unwrap(), b"Exif\0\0");
        assert_eq!(
            decode_raw_profile("\nexif\n 10\n4578\n"),
            None,
            "shorter than it claims"
        );
        assert_eq!(decode_raw_profile("\nexif\n 1\nzz\n"), None);
    }
}
