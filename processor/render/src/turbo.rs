//! JPEG through libjpeg-turbo (the `turbojpeg` crate builds its bundled libjpeg-turbo 3):
//! decoding with DCT-domain downscaling and encoding the versions. Measured here, the codec is
//! most of a render's cost: `image`'s JPEG encoder alone took 132 ms of a 321 ms naive render.
//!
//! DCT scaling decodes at M/8 of the size for M in 1..=8. We take the smallest M whose result
//! still covers the largest version (so nothing is upscaled and the resize after it is a true
//! downscale), and only M ≤ 4: measured here (`examples/scales.rs`, 12 real 6-20 MP photos and a
//! 48 MP one), 5/8, 6/8 and 7/8 decodes take as long as a full one or longer, baseline or
//! progressive, and the smaller resize after them wins back at most 4 ms. 3/8 and 4/8 decode
//! a 48 MP photo in 60% of a full decode's time, 4/8 a 20 MP one in 60%.

use turbojpeg::{Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

/// The scale (M of M/8) to decode a `w`x`h` JPEG at so that it still covers `need_w`x`need_h`.
pub fn dct_scale(w: u32, h: u32, need_w: u32, need_h: u32) -> usize {
    for m in 1..=4usize {
        let f = ScalingFactor::new(m, 8);
        if f.scale(w as usize) >= need_w as usize && f.scale(h as usize) >= need_h as usize {
            return m;
        }
    }
    8
}

/// Decodes to RGB at M/8 scale. Errors (CMYK, unusual layouts) let the caller fall back.
pub fn decode_rgb(bytes: &[u8], m: usize) -> Result<(u32, u32, Vec<u8>), turbojpeg::Error> {
    let mut d = Decompressor::new()?;
    let header = d.read_header(bytes)?;
    let factor = ScalingFactor::new(m, 8);
    d.set_scaling_factor(factor)?;
    let scaled = header.scaled(factor);
    let mut image = Image {
        pixels: vec![0u8; 3 * scaled.width * scaled.height],
        width: scaled.width,
        pitch: 3 * scaled.width,
        height: scaled.height,
        format: PixelFormat::RGB,
    };
    d.decompress(bytes, image.as_deref_mut())?;
    Ok((scaled.width as u32, scaled.height as u32, image.pixels))
}

/// Encodes RGB pixels as a baseline JPEG with 4:2:0 chroma, no metadata.
pub fn encode_rgb(
    pixels: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, turbojpeg::Error> {
    let mut c = Compressor::new()?;
    c.set_quality(i32::from(quality))?;
    c.set_subsamp(Subsamp::Sub2x2)?;
    let image = Image {
        pixels,
        width: width as usize,
        pitch: 3 * width as usize,
        height: height as usize,
        format: PixelFormat::RGB,
    };
    c.compress_to_vec(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_the_smallest_that_covers_the_target_and_at_most_half() {
        // 6028x3391 for a 2500x1406 largest version: 1/2 (3014x1696) covers it, 3/8 doesn't.
        assert_eq!(dct_scale(6028, 3391, 2500, 1406), 4);
        // A 48 MP phone photo: 3/8 (3000x2250) covers 2500x1875.
        assert_eq!(dct_scale(8000, 6000, 2500, 1875), 3);
        // Needing more than 4/8 means a full decode: 5/8 to 7/8 are no faster.
        assert_eq!(dct_scale(4000, 3000, 2500, 1875), 8);
        assert_eq!(dct_scale(2600, 1950, 2500, 1875), 8);
        assert_eq!(dct_scale(100, 100, 100, 100), 8);
        assert_eq!(dct_scale(16000, 8000, 150, 75), 1);
    }
}
