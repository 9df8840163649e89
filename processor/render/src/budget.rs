//! How much memory a render will take, from the file's header alone, so renders can be
//! admitted by a memory budget as well as by cores (a 100 MP 16-bit PNG decodes to 800 MB;
//! several of them at once on one machine would not fit).
//!
//! The probe reads headers with the pure-Rust decoders only (never libheif or libjpeg-turbo:
//! this runs in the processor, not in a sandboxed render worker). What it can't read is charged the
//! worst case the limits allow.

use std::io::Cursor;

use image::{ImageDecoder, ImageReader};

use crate::Limits;

/// Working memory of a render per decoded byte, a reasoned bound rather than a measurement:
/// the decoded frame (1x), its 8-bit sRGB copy (at most 1x), the largest version and the
/// encoder's buffers (well under 1x for anything larger than 2500x2500).
pub const OVERHEAD: u64 = 3;

/// The bytes a render of a `width` x `height` image with `bytes_per_pixel` needs.
pub fn estimate(width: u32, height: u32, bytes_per_pixel: u8) -> u64 {
    u64::from(width)
        .saturating_mul(u64::from(height))
        .saturating_mul(u64::from(bytes_per_pixel.max(1)))
        .saturating_mul(OVERHEAD)
}

/// The largest render the limits allow: the pixel limit at 16-bit RGBA.
pub fn worst_case(limits: Limits) -> u64 {
    limits.max_pixels.saturating_mul(8).saturating_mul(OVERHEAD)
}

/// The memory a render of `bytes` will need, from its header; the worst case when the header
/// can't be read here (HEIF/AVIF, or anything broken).
pub fn memory_needed(bytes: &[u8], limits: Limits) -> u64 {
    probe(bytes)
        .map(|(w, h, bpp)| estimate(w, h, bpp).min(worst_case(limits)))
        .unwrap_or_else(|| worst_case(limits))
}

/// Width, height and bytes per pixel from the header. A TIFF is charged at least as the 8-bit
/// RGBA raster libtiff decodes it into (any TIFF the `image` crate fails on goes there, even
/// one it could describe), also when the `image` crate can't describe it at all.
pub fn probe(bytes: &[u8]) -> Option<(u32, u32, u8)> {
    let tiff = gallery_schema::sniff::sniff_image(bytes) == Some("image/tiff");
    match probe_image(bytes) {
        Some((w, h, bpp)) if tiff => Some((w, h, bpp.max(4))),
        Some(found) => Some(found),
        None => crate::tiff_extra::dimensions(bytes).map(|(w, h)| (w, h, 4)),
    }
}

fn probe_image(bytes: &[u8]) -> Option<(u32, u32, u8)> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    reader.format()?;
    let decoder = reader.into_decoder().ok()?;
    let (w, h) = decoder.dimensions();
    Some((w, h, decoder.color_type().bytes_per_pixel()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: image::ExtendedColorType) -> Vec<u8> {
        use image::ImageEncoder;
        let channels = match color {
            image::ExtendedColorType::Rgba16 => 8,
            image::ExtendedColorType::Rgb8 => 3,
            _ => unreachable!(),
        };
        let raw = vec![0u8; (width * height) as usize * channels];
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&raw, width, height, color)
            .unwrap();
        out
    }

    #[test]
    fn tiffs_only_libtiff_reads_are_charged_by_their_size() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/tiff/ojpeg_chewey_subsamp21_multi_strip.tiff"
        );
        let ojpeg = std::fs::read(path).unwrap();
        assert_eq!(probe(&ojpeg), Some((392, 575, 4)));
        // One the `image` crate describes (8-bit grey, 1 byte a pixel) may still end in
        // libtiff's RGBA raster: charged as that.
        let mut grey = std::io::Cursor::new(Vec::new());
        tiff::encoder::TiffEncoder::new(&mut grey)
            .unwrap()
            .write_image::<tiff::encoder::colortype::Gray8>(30, 20, &[7; 600])
            .unwrap();
        assert_eq!(probe(&grey.into_inner()), Some((30, 20, 4)));
    }

    #[test]
    fn deep_images_are_charged_for_their_depth() {
        let limits = Limits {
            max_pixels: 100_000_000,
            max_side: 30_000,
        };
        let rgb8 = png(100, 50, image::ExtendedColorType::Rgb8);
        assert_eq!(probe(&rgb8), Some((100, 50, 3)));
        assert_eq!(memory_needed(&rgb8, limits), 100 * 50 * 3 * OVERHEAD);
        let rgba16 = png(100, 50, image::ExtendedColorType::Rgba16);
        assert_eq!(memory_needed(&rgba16, limits), 100 * 50 * 8 * OVERHEAD);
        // What the probe can't read costs the worst case.
        assert_eq!(memory_needed(b"not an image", limits), worst_case(limits));
        assert_eq!(worst_case(limits), 2_400_000_000);
        // A header that claims more than the limits is charged at most the worst case (it
        // will be refused by the render itself).
        assert_eq!(
            estimate(u32::MAX, u32::MAX, 8).min(worst_case(limits)),
            worst_case(limits)
        );
    }
}
