//! Decoding within limits: sniff the format, read the header, check the pixel limits before
//! any buffer exists, then decode once, upright, by the fastest path for the format (JPEG:
//! libjpeg-turbo with DCT scaling; CMYK JPEG: raw samples through their profile; TIFF layouts
//! `image` refuses: our pure-Rust fallback, then libtiff; everything else: the `image` crate).

use std::io::Cursor;

use gallery_schema::sniff::{known_unsupported, sniff_image, unsupported_message};
use gallery_schema::{ErrorCode, Size, VersionName, fit_inside};
use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, metadata::Orientation};

use crate::decoded::{Decoded, check_size};
use crate::{Limits, RenderError, color, heif, jpeg, png_exif, tiff_extra, turbo};

fn classify(err: ImageError) -> RenderError {
    match err {
        ImageError::Unsupported(e) => RenderError::new(ErrorCode::UnsupportedFormat, e.to_string()),
        ImageError::Limits(e) => RenderError::new(ErrorCode::ImageTooLarge, e.to_string()),
        ImageError::Decoding(e) => RenderError::new(ErrorCode::CorruptImage, e.to_string()),
        ImageError::IoError(e) => RenderError::new(ErrorCode::CorruptImage, e.to_string()),
        other => RenderError::new(ErrorCode::CorruptImage, other.to_string()),
    }
}

/// Decodes `bytes`, upright, within `limits`.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Decoded, RenderError> {
    if bytes.is_empty() {
        return Err(RenderError::new(
            ErrorCode::CorruptImage,
            "the file is empty",
        ));
    }
    match sniff_image(bytes) {
        None => {
            return Err(RenderError::new(
                ErrorCode::UnsupportedFormat,
                unsupported_message(known_unsupported(bytes)),
            ));
        }
        Some("image/heic" | "image/avif") => return heif::decode(bytes, limits),
        Some(_) => {}
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| RenderError::new(ErrorCode::CorruptImage, e.to_string()))?;
    if reader.format().is_none() {
        return Err(RenderError::new(
            ErrorCode::UnsupportedFormat,
            unsupported_message(None),
        ));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        match jpeg::check(bytes) {
            Ok(()) => {}
            Err(jpeg::JpegProblem::Truncated) => {
                return Err(RenderError::new(
                    ErrorCode::CorruptImage,
                    "the JPEG is truncated (no end-of-image marker)",
                ));
            }
            Err(jpeg::JpegProblem::UnsupportedCoding(m)) => {
                return Err(RenderError::new(
                    ErrorCode::UnsupportedFormat,
                    format!(
                        "lossless or arithmetic-coded JPEG (SOF marker 0x{m:02X}) is not supported"
                    ),
                ));
            }
            Err(jpeg::JpegProblem::TooManyScans) => {
                return Err(RenderError::new(
                    ErrorCode::CorruptImage,
                    format!("the JPEG has more than {} scans", jpeg::MAX_SCANS),
                ));
            }
            Err(jpeg::JpegProblem::Malformed) => {
                return Err(RenderError::new(
                    ErrorCode::CorruptImage,
                    "the JPEG's marker structure is broken",
                ));
            }
        }
    }
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let is_png = reader.format() == Some(image::ImageFormat::Png);
    let mut reader = reader;
    reader.limits(decoder_limits(limits));
    let is_tiff = reader.format() == Some(image::ImageFormat::Tiff);
    let mut decoder = match reader.into_decoder() {
        Ok(decoder) => decoder,
        Err(e) if is_tiff => return decode_tiff_fallback(bytes, limits, classify(e)),
        Err(e) => return Err(classify(e)),
    };
    let (w, h) = decoder.dimensions();
    check_size(Size::new(w, h), limits)?;
    // A broken EXIF block (or ICC profile) must not cost the photo: fall back to defaults.
    let mut orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if is_png && orientation == Orientation::NoTransforms {
        orientation = png_exif::raw_profile_orientation(bytes).unwrap_or(orientation);
    }
    let icc = decoder.icc_profile().ok().flatten();
    let cmyk = icc.as_deref().and_then(color::cmyk_profile);
    let swaps = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let original = if swaps {
        Size::new(h, w)
    } else {
        Size::new(w, h)
    };
    let mut image = match cmyk {
        Some(profile) if is_jpeg => {
            drop(decoder);
            decode_cmyk_jpeg(bytes, &profile, limits)?
        }
        None if is_jpeg => {
            drop(decoder);
            // Decode only as many pixels as the largest version needs (stored orientation).
            let largest = fit_inside(original, VersionName::CASCADE[0].bounds());
            let (need_w, need_h) = if swaps {
                (largest.height, largest.width)
            } else {
                (largest.width, largest.height)
            };
            match turbo::decode_rgb(bytes, turbo::dct_scale(w, h, need_w, need_h)) {
                Ok((sw, sh, rgb)) => DynamicImage::ImageRgb8(
                    image::RgbImage::from_raw(sw, sh, rgb)
                        .ok_or_else(|| RenderError::new(ErrorCode::Internal, "decoded size"))?,
                ),
                // Layouts libjpeg-turbo won't turn into RGB (CMYK without a profile...).
                Err(_) => decode_generic(bytes, limits)?,
            }
        }
        _ => match DynamicImage::from_decoder(decoder) {
            Ok(image) => image,
            Err(e) if is_tiff => return decode_tiff_fallback(bytes, limits, classify(e)),
            Err(e) => return Err(classify(e)),
        },
    };
    image.apply_orientation(orientation);
    let profile = icc
        .as_deref()
        .and_then(color::rgb_profile_needing_conversion);
    Ok(Decoded {
        image,
        original,
        profile,
    })
}

/// TIFFs the `image` crate refuses or fails on (`first` is its error): the layouts
/// [`tiff_extra`] decodes in Rust, then libtiff for the rest (old-style JPEG, LogLuv, WebP and
/// LERC compression, grey with alpha, old LZW...). When both fail, the error keeps `first`'s
/// words and adds libtiff's.
fn decode_tiff_fallback(
    bytes: &[u8],
    limits: Limits,
    first: RenderError,
) -> Result<Decoded, RenderError> {
    if first.code == ErrorCode::ImageTooLarge {
        return Err(first);
    }
    let first = match tiff_extra::decode(bytes, limits) {
        Some(Ok(image)) => {
            check_size(Size::new(image.width(), image.height()), limits)?;
            let original = Size::new(image.width(), image.height());
            return Ok(Decoded {
                image,
                original,
                profile: None,
            });
        }
        Some(Err(e)) if e.code == ErrorCode::ImageTooLarge => return Err(e),
        Some(Err(e)) => e,
        None => first,
    };
    let lt_limits = gallery_libtiff::Limits {
        max_pixels: limits.max_pixels,
        max_side: limits.max_side,
    };
    let decoded = match gallery_libtiff::decode_first_page(bytes, lt_limits) {
        Ok(decoded) => decoded,
        Err(gallery_libtiff::Error::TooLarge { width, height }) => {
            check_size(Size::new(width, height), limits)?;
            return Err(RenderError::new(
                ErrorCode::ImageTooLarge,
                format!("{width}x{height} is over the size limits"),
            ));
        }
        Err(e) => {
            let code = match e {
                gallery_libtiff::Error::Corrupt(_) => ErrorCode::CorruptImage,
                gallery_libtiff::Error::Unsupported(_) => ErrorCode::UnsupportedFormat,
                _ => first.code,
            };
            return Err(RenderError::new(code, format!("{}; {e}", first.message)));
        }
    };
    let (w, h) = (decoded.width, decoded.height);
    let size_error = || RenderError::new(ErrorCode::Internal, "libtiff's raster size");
    let mut image = match decoded.pixels {
        gallery_libtiff::Pixels::Rgb(rgb) => {
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, rgb).ok_or_else(size_error)?)
        }
        gallery_libtiff::Pixels::Rgba(rgba) => {
            DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w, h, rgba).ok_or_else(size_error)?)
        }
    };
    let orientation = u8::try_from(decoded.orientation)
        .ok()
        .and_then(Orientation::from_exif)
        .unwrap_or(Orientation::NoTransforms);
    image.apply_orientation(orientation);
    let original = Size::new(image.width(), image.height());
    Ok(Decoded {
        image,
        original,
        profile: decoded
            .icc
            .as_deref()
            .and_then(color::rgb_profile_needing_conversion),
    })
}

/// The `image` crate's JPEG decoder, for the files libjpeg-turbo declines.
fn decode_generic(bytes: &[u8], limits: Limits) -> Result<DynamicImage, RenderError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::Jpeg);
    reader.limits(decoder_limits(limits));
    reader.decode().map_err(classify)
}

/// A CMYK JPEG with a CMYK profile: decode the raw CMYK samples and convert them through the
/// profile (the generic decoder would use the naive formula and ignore the profile).
fn decode_cmyk_jpeg(
    bytes: &[u8],
    profile: &moxcms::ColorProfile,
    limits: Limits,
) -> Result<DynamicImage, RenderError> {
    use zune_core::colorspace::ColorSpace;
    let corrupt = |e: zune_jpeg::errors::DecodeErrors| {
        RenderError::new(ErrorCode::CorruptImage, e.to_string())
    };
    let options = zune_core::options::DecoderOptions::default()
        .set_max_width(limits.max_side as usize)
        .set_max_height(limits.max_side as usize);
    let mut probe = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    probe.decode_headers().map_err(corrupt)?;
    // YCCK (Adobe transform 2) is CMY stored as YCbCr plus K: decode it as it is stored and
    // undo the YCbCr step ourselves; plain CMYK comes out as is.
    let stored = probe.input_colorspace().unwrap_or(ColorSpace::CMYK);
    let out = if stored == ColorSpace::YCCK {
        ColorSpace::YCCK
    } else {
        ColorSpace::CMYK
    };
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options.jpeg_set_out_colorspace(out),
    );
    let mut cmyk = decoder.decode().map_err(corrupt)?;
    if out == ColorSpace::YCCK {
        color::ycck_to_cmyk_in_place(&mut cmyk);
    }
    let info = decoder
        .info()
        .ok_or_else(|| RenderError::new(ErrorCode::CorruptImage, "no JPEG header"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if cmyk.len() != w as usize * h as usize * 4 {
        return Err(RenderError::new(
            ErrorCode::CorruptImage,
            "unexpected CMYK sample count",
        ));
    }
    // Photoshop (the usual source of CMYK JPEGs) stores plain CMYK inverted; undoing YCCK's
    // YCbCr step yields true C, M, Y with an inverted K.
    let rgb = color::cmyk_to_srgb(profile, &mut cmyk, out == ColorSpace::CMYK)
        .map_err(|e| RenderError::new(ErrorCode::CorruptImage, e))?;
    let buffer = image::RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| RenderError::new(ErrorCode::Internal, "CMYK conversion size"))?;
    Ok(DynamicImage::ImageRgb8(buffer))
}

/// The `image` crate's own allocation guards, matching ours.
fn decoder_limits(limits: Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    // Room for the decoded buffer at 16 bits per channel plus the decoder's own working set.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}
