//! Decoding within limits: sniff the format, read the header, check the pixel limits before
//! any buffer exists, then decode once, upright, by the fastest path for the format (JPEG:
//! libjpeg-turbo with DCT scaling; CMYK JPEG: raw samples through their profile; TIFF layouts
//! `image` refuses: our pure-Rust fallback, then libtiff; everything else: the `image` crate).

use std::io::Cursor;

use gallery_schema::sniff::{known_unsupported, sniff_image, unsupported_message};
use gallery_schema::{ErrorCode, Size, VersionName, fit_inside};
use image::{
    DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, metadata::Orientation,
};

use crate::decoded::{Decoded, check_size};
use crate::{Limits, RenderError, color, heif, jpeg, png_exif, tiff_extra, turbo};

fn classify(err: ImageError) -> RenderError {
    match err {
        ImageError::Unsupported(e) => RenderError::new(ErrorCode::UnsupportedFormat, e.to_string()),
        ImageError::Limits(e) => RenderError::new(
            ErrorCode::ImageTooLarge,
            format!("{e}: its header asks for more pixels or memory than a render may use"),
        ),
        ImageError::Decoding(e) => RenderError::new(ErrorCode::CorruptImage, e.to_string()),
        ImageError::IoError(e) => RenderError::new(ErrorCode::CorruptImage, e.to_string()),
        other => RenderError::new(ErrorCode::CorruptImage, other.to_string()),
    }
}

/// Decodes `bytes`, upright, within `limits`.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Decoded, RenderError> {
    if is_heif(bytes)? {
        return heif::decode(bytes, limits);
    }
    let (mut reader, format) = reader_with_format(bytes)?;
    if format == ImageFormat::Jpeg {
        check_jpeg_structure(bytes)?;
    }
    reader.limits(decoder_limits(limits));
    match reader.into_decoder() {
        Ok(decoder) => decode_with(decoder, bytes, limits, format),
        Err(e) if format == ImageFormat::Tiff => decode_tiff_fallback(bytes, limits, classify(e)),
        Err(e) => Err(classify(e)),
    }
}

/// Sniffs the format from the bytes: refuses an empty file and one of no format we read;
/// `true` for HEIC and AVIF (libheif's, [`heif`]).
fn is_heif(bytes: &[u8]) -> Result<bool, RenderError> {
    if bytes.is_empty() {
        return Err(RenderError::new(
            ErrorCode::CorruptImage,
            "the file is empty",
        ));
    }
    match sniff_image(bytes) {
        None => Err(RenderError::new(
            ErrorCode::UnsupportedFormat,
            unsupported_message(known_unsupported(bytes)),
        )),
        Some("image/heic" | "image/avif") => Ok(true),
        Some(_) => Ok(false),
    }
}

/// The `image` crate's reader over an original in memory.
type Reader<'a> = ImageReader<Cursor<&'a [u8]>>;

/// The `image` crate's reader for `bytes`, with the format it recognises (refused when none).
fn reader_with_format(bytes: &[u8]) -> Result<(Reader<'_>, ImageFormat), RenderError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| RenderError::new(ErrorCode::CorruptImage, e.to_string()))?;
    match reader.format() {
        Some(format) => Ok((reader, format)),
        None => Err(RenderError::new(
            ErrorCode::UnsupportedFormat,
            unsupported_message(None),
        )),
    }
}

/// Refuses, before decoding, JPEGs that are truncated, broken, of a coding we don't read, or
/// with too many scans ([`jpeg::check`]).
fn check_jpeg_structure(bytes: &[u8]) -> Result<(), RenderError> {
    match jpeg::check(bytes) {
        Ok(()) => Ok(()),
        Err(jpeg::JpegProblem::Truncated) => Err(RenderError::new(
            ErrorCode::CorruptImage,
            "the JPEG is truncated (no end-of-image marker)",
        )),
        Err(jpeg::JpegProblem::UnsupportedCoding(m)) => Err(RenderError::new(
            ErrorCode::UnsupportedFormat,
            format!("lossless or arithmetic-coded JPEG (SOF marker 0x{m:02X}) is not supported"),
        )),
        Err(jpeg::JpegProblem::TooManyScans) => Err(RenderError::new(
            ErrorCode::CorruptImage,
            format!("the JPEG has more than {} scans", jpeg::MAX_SCANS),
        )),
        Err(jpeg::JpegProblem::Malformed) => Err(RenderError::new(
            ErrorCode::CorruptImage,
            "the JPEG's marker structure is broken",
        )),
    }
}

/// The header (size checked against the limits, orientation, colour profile), then the pixels
/// by the fastest path for the format, then upright.
fn decode_with(
    mut decoder: impl ImageDecoder,
    bytes: &[u8],
    limits: Limits,
    format: ImageFormat,
) -> Result<Decoded, RenderError> {
    let (w, h) = decoder.dimensions();
    check_size(Size::new(w, h), limits)?;
    // A broken EXIF block (or ICC profile) must not cost the photo: fall back to defaults.
    let orientation = orientation_of(&mut decoder, bytes, format);
    let icc = decoder.icc_profile().ok().flatten();
    let cmyk = icc.as_deref().and_then(color::cmyk_profile);
    let swaps = swaps_sides(orientation);
    let original = if swaps {
        Size::new(h, w)
    } else {
        Size::new(w, h)
    };
    let is_jpeg = format == ImageFormat::Jpeg;
    let mut image = match cmyk {
        Some(profile) if is_jpeg => {
            drop(decoder);
            decode_cmyk_jpeg(bytes, &profile, limits)?
        }
        None if is_jpeg => {
            drop(decoder);
            decode_scaled_jpeg(bytes, limits, (w, h), original, swaps)?
        }
        _ => match DynamicImage::from_decoder(decoder) {
            Ok(image) => image,
            Err(e) if format == ImageFormat::Tiff => {
                return decode_tiff_fallback(bytes, limits, classify(e));
            }
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

/// The EXIF orientation, none when unreadable; for a PNG without one, the orientation in its
/// "Raw profile type exif" text chunk.
fn orientation_of(
    decoder: &mut impl ImageDecoder,
    bytes: &[u8],
    format: ImageFormat,
) -> Orientation {
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if format == ImageFormat::Png && orientation == Orientation::NoTransforms {
        return png_exif::raw_profile_orientation(bytes).unwrap_or(orientation);
    }
    orientation
}

/// Whether the orientation turns the image a quarter, swapping its width and height.
fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// A JPEG by libjpeg-turbo, decoding only as many pixels as the largest version of the
/// `original` (upright) size needs: `stored` is the size as stored, `swaps` whether the two
/// differ by a quarter turn.
fn decode_scaled_jpeg(
    bytes: &[u8],
    limits: Limits,
    stored: (u32, u32),
    original: Size,
    swaps: bool,
) -> Result<DynamicImage, RenderError> {
    let (w, h) = stored;
    let largest = fit_inside(original, VersionName::CASCADE[0].bounds());
    let (need_w, need_h) = if swaps {
        (largest.height, largest.width)
    } else {
        (largest.width, largest.height)
    };
    match turbo::decode_rgb(bytes, turbo::dct_scale(w, h, need_w, need_h)) {
        Ok((sw, sh, rgb)) => Ok(DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(sw, sh, rgb)
                .ok_or_else(|| RenderError::new(ErrorCode::Internal, "decoded size"))?,
        )),
        // Layouts libjpeg-turbo won't turn into RGB (CMYK without a profile...).
        Err(_) => decode_generic(bytes, limits),
    }
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
